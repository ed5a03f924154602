"""MySQL and MariaDB: information_schema, four queries.

These engines expose no stable object ids without extra privileges, so objects are
matched by name, and renames are recognised by shape (see the revisioner's diff).
The database named in the URL is inspected, or every non-system one if none is.
"""

from __future__ import annotations

from typing import Any

import pymysql

from metamapper.catalog import Column, Index, Schema, Table
from metamapper.inspectors import DatastoreUnavailable, InspectionError
from metamapper.inspectors.assemble import CatalogBuilder
from metamapper_urls import parse_url, redact_text

SYSTEM_SCHEMAS = ("information_schema", "mysql", "performance_schema", "sys")
_TABLE_TYPES = {"BASE TABLE": "table", "SYSTEM VERSIONED": "table", "VIEW": "view"}

TABLES = """
SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, TABLE_COMMENT
FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({schemas})
"""

COLUMNS = """
SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, DATA_TYPE,
       COALESCE(CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION), NUMERIC_SCALE,
       IS_NULLABLE, COLUMN_DEFAULT, COLUMN_KEY, COLUMN_COMMENT
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({schemas})
"""

INDEXES = """
SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME
FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({schemas})
ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX
"""


def connect_args(url: str) -> dict[str, Any]:
    parsed = parse_url(url)
    return {
        "host": parsed.host or "localhost",
        "port": parsed.port or 3306,
        "user": parsed.username or "",
        "password": parsed.password or "",
        "connect_timeout": 10,
        "charset": "utf8mb4",
    }


def inspect(url: str) -> list[Schema]:
    database = parse_url(url).path.lstrip("/") or None
    try:
        conn = pymysql.connect(**connect_args(url))
    except pymysql.err.OperationalError as exc:
        raise DatastoreUnavailable(redact_text(str(exc))) from None
    try:
        with conn.cursor() as cursor:
            return _read(cursor, database)
    except pymysql.err.OperationalError as exc:
        raise DatastoreUnavailable(redact_text(str(exc))) from None
    except pymysql.err.MySQLError as exc:
        raise InspectionError(redact_text(str(exc))) from None
    finally:
        conn.close()


def _read(cursor: Any, database: str | None) -> list[Schema]:
    if database:
        cursor.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
            (database,),
        )
    else:
        cursor.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN %s",
            (SYSTEM_SCHEMAS,),
        )
    names = [row[0] for row in cursor.fetchall()]
    if not names:
        return []
    catalog = CatalogBuilder()
    for name in names:
        catalog.schema(name, Schema(name))
    in_schemas = ", ".join(["%s"] * len(names))

    cursor.execute(TABLES.format(schemas=in_schemas), names)
    for schema, name, table_type, comment in cursor.fetchall():
        if table_type in _TABLE_TYPES:
            table_type = _TABLE_TYPES[table_type]
            comment = comment if comment and table_type != "view" else None
            catalog.table(schema, (schema, name), Table(name, table_type, comment))

    cursor.execute(COLUMNS.format(schemas=in_schemas), names)
    for schema, table, name, ordinal, data_type, length, scale, nullable, default, key, comment in (
        cursor.fetchall()
    ):
        catalog.column((schema, table), Column(
            name, ordinal, data_type, length, scale, nullable == "YES", default,
            primary_key=key == "PRI", comment=comment or None,
        ))

    cursor.execute(INDEXES.format(schemas=in_schemas), names)
    indexes: dict[tuple[str, str, str], Index] = {}
    for schema, table, name, non_unique, column in cursor.fetchall():
        index = indexes.get((schema, table, name))
        if index is None:
            index = Index(name, [], not non_unique, name == "PRIMARY")
            indexes[(schema, table, name)] = index
            catalog.index((schema, table), index)
        index.columns.append(column if column is not None else "<expression>")
    return catalog.build()
