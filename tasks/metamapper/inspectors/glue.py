"""AWS Glue Data Catalog (Metamapper's engine ``glue``): its databases and tables through
the Glue API, as Metamapper reads them.

The datastore's ``database`` is the catalog id (the AWS account), ``extras["region"]`` the
region and ``extras["role"]`` an IAM role to assume first (without one, the worker's own
AWS credentials are used). Glue has no ids of its own: object refs are MD5s of the
catalog, database, table and column names, as Metamapper makes them, so a rename is a new
object. Columns are the storage descriptor's, then the partition keys (as primary keys),
numbered from 1; a ``struct<...>`` type is stored as ``struct``. The version Metamapper
records for Glue is the AWS SDK's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions

from metamapper.catalog import Column, Schema, Table
from metamapper.inspectors import DatastoreUnavailable, InspectionError
from metamapper.metastore.datastores import ConnectionSettings

#: Failures to reach AWS at all (worth a retry), as opposed to AWS refusing.
_UNREACHABLE = (
    botocore.exceptions.EndpointConnectionError,
    botocore.exceptions.ConnectTimeoutError,
    botocore.exceptions.ReadTimeoutError,
)


def inspect(connection: ConnectionSettings) -> list[Schema]:
    try:
        client = _client(connection)
        return [
            _schema(connection.database, database["Name"],
                    _pages(client, "get_tables", "TableList", CatalogId=connection.database,
                           DatabaseName=database["Name"]))
            for database in _pages(client, "get_databases", "DatabaseList",
                                   CatalogId=connection.database)
        ]
    except _UNREACHABLE as exc:
        raise DatastoreUnavailable(f"AWS Glue: {exc}") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise InspectionError(f"AWS Glue: {exc}") from None


def version(connection: ConnectionSettings) -> str:
    return str(boto3.__version__)


def _oid(*parts: str) -> str:
    return hashlib.md5("".join(parts).encode()).hexdigest()


def _client(connection: ConnectionSettings) -> Any:
    region = connection.extras.get("region") or None
    role = connection.extras.get("role")
    if not role:
        return boto3.client("glue", region_name=region)
    credentials = boto3.client("sts", region_name=region).assume_role(
        RoleArn=role, RoleSessionName=f"metamapper_{region}_{connection.database}",
    )["Credentials"]
    return boto3.client(
        "glue", region_name=region, aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def _pages(client: Any, operation: str, key: str, **arguments: str) -> Iterator[Any]:
    for page in client.get_paginator(operation).paginate(**arguments):
        yield from page[key]


def _schema(catalog: str, name: str, tables: Iterator[dict[str, Any]]) -> Schema:
    schema = Schema(name, native_id=_oid(catalog, name))
    for table in tables:
        table_id = ".".join([catalog, name, table["Name"]])
        partition_keys = table.get("PartitionKeys", [])
        keys = {key["Name"] for key in partition_keys}
        columns = table.get("StorageDescriptor", {}).get("Columns", []) + partition_keys
        schema.tables.append(Table(
            table["Name"], table.get("TableType", ""), table.get("Description"),
            native_id=_oid(table_id),
            columns=[
                Column(column["Name"], position, _data_type(column["Type"]),
                       default_value=None, primary_key=column["Name"] in keys,
                       comment=column.get("Comment"), native_id=_oid(table_id, column["Name"]))
                for position, column in enumerate(columns, 1)
            ],
        ))
    schema.tables.sort(key=lambda t: t.name)
    return schema


def _data_type(glue_type: str) -> str:
    lowered = glue_type.lower()
    return "struct" if lowered.startswith("struct") else lowered
