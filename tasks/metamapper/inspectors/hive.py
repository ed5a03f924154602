"""Hive Metastore: the tables of its backing database (MySQL/MariaDB or PostgreSQL, named
by the datastore's ``extras["dialect"]``, as in Metamapper), read with that database's
driver.

Databases are ``DBS``, tables ``TBLS`` (their columns through ``SDS`` to ``COLUMNS_V2``,
partition keys in ``PARTITION_KEYS``, the comment in ``TABLE_PARAMS``), the schema's
version ``VERSION``. Native ids are Hive's own: ``DB_ID``, ``TBL_ID`` (kept by
``ALTER TABLE ... RENAME``) and ``<TBL_ID>/<column>`` as Metamapper spells them. Partition
keys come after the columns, as primary keys (Metamapper's reading); positions count
from 1. On PostgreSQL, Hive's schema tool creates the names in upper case, quoted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from metamapper.catalog import Column, Schema, Table
from metamapper.inspectors import InspectionError, mysql, postgresql
from metamapper.inspectors.assemble import CatalogBuilder
from metamapper.metastore.datastores import ConnectionSettings

T = TypeVar("T")

#: Backing databases: Metamapper's dialect name -> (engine, quote for identifiers).
DIALECTS = {"mysql": ("mysql", "`"), "postgresql": ("postgresql", '"')}

SCHEMAS = "SELECT {DB_ID}, {NAME} FROM {DBS}"
TABLES = """
SELECT t.{TBL_ID}, t.{DB_ID}, t.{TBL_NAME}, t.{TBL_TYPE}, s.{CD_ID},
       (SELECT p.{PARAM_VALUE} FROM {TABLE_PARAMS} p
         WHERE p.{TBL_ID} = t.{TBL_ID} AND p.{PARAM_KEY} = 'comment')
FROM {TBLS} t LEFT JOIN {SDS} s ON s.{SD_ID} = t.{SD_ID}
"""
COLUMNS = "SELECT {CD_ID}, {COLUMN_NAME}, {TYPE_NAME}, {COMMENT}, {INTEGER_IDX} FROM {COLUMNS_V2}"
PARTITION_KEYS = """
SELECT {TBL_ID}, {PKEY_NAME}, {PKEY_TYPE}, {PKEY_COMMENT}, {INTEGER_IDX} FROM {PARTITION_KEYS}
"""
VERSION = "SELECT {SCHEMA_VERSION} FROM {VERSION}"

_NAMES = (
    "DB_ID", "NAME", "DBS", "TBL_ID", "TBL_NAME", "TBL_TYPE", "CD_ID", "PARAM_VALUE",
    "TABLE_PARAMS", "PARAM_KEY", "TBLS", "SDS", "SD_ID", "COLUMN_NAME", "TYPE_NAME",
    "COMMENT", "INTEGER_IDX", "COLUMNS_V2", "PKEY_NAME", "PKEY_TYPE", "PKEY_COMMENT",
    "PARTITION_KEYS", "SCHEMA_VERSION", "VERSION",
)


def inspect(connection: ConnectionSettings) -> list[Schema]:
    return _run(connection, _read)


def version(connection: ConnectionSettings) -> str:
    def read(execute: Callable[[str], list[Any]]) -> str:
        rows = execute(VERSION)
        if not rows:
            raise InspectionError("the Hive metastore has no VERSION row")
        return str(rows[0][0])

    return _run(connection, read)


def _run(connection: ConnectionSettings, read: Callable[[Callable[[str], list[Any]]], T]) -> T:
    dialect = str(connection.extras.get("dialect") or "")
    if dialect not in DIALECTS:
        raise InspectionError(
            f"a Hive metastore on {dialect or 'an unnamed database'} is not supported here"
            f" (extras.dialect: {', '.join(DIALECTS)})"
        )
    engine, quote = DIALECTS[dialect]
    names = {name: f"{quote}{name}{quote}" for name in _NAMES}
    url = dataclasses.replace(connection, engine=engine).url()

    def on(cursor: Any) -> T:
        def execute(sql: str) -> list[Any]:
            cursor.execute(sql.format(**names))
            return list(cursor.fetchall())

        return read(execute)

    if engine == "mysql":
        return mysql.query(url, on, use_database=True)
    return postgresql.query(url, on)


def _read(execute: Callable[[str], list[Any]]) -> list[Schema]:
    catalog = CatalogBuilder()
    for db_id, name in execute(SCHEMAS):
        catalog.schema(db_id, Schema(name, native_id=str(db_id)))
    columns_of: dict[Any, list[tuple[Any, ...]]] = {}
    for cd_id, *column in execute(COLUMNS):
        columns_of.setdefault(cd_id, []).append(tuple(column))
    keys_of: dict[Any, list[tuple[Any, ...]]] = {}
    for tbl_id, *key in execute(PARTITION_KEYS):
        keys_of.setdefault(tbl_id, []).append(tuple(key))
    for tbl_id, db_id, name, table_type, cd_id, comment in execute(TABLES):
        table = Table(name, table_type, comment, native_id=str(tbl_id))
        columns = sorted(columns_of.get(cd_id, []), key=lambda c: c[3])
        keys = sorted(keys_of.get(tbl_id, []), key=lambda k: k[3])
        for position, (column, data_type, column_comment, _) in enumerate(columns + keys, 1):
            table.columns.append(Column(
                column, position, data_type, nullable=position <= len(columns),
                default_value=None, primary_key=position > len(columns),
                comment=column_comment, native_id=f"{tbl_id}/{column}",
            ))
        catalog.table(db_id, tbl_id, table)
    return catalog.build()
