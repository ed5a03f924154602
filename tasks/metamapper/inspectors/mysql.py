"""MySQL and MariaDB: information_schema, four queries.

These engines expose no stable object ids, so objects are matched by name, and renames
are recognised by shape (see the revisioner's diff). Tables get InnoDB's table id as
their ``rename_ref`` when the user may read it (the PROCESS privilege): ``RENAME TABLE``
keeps it (a rebuild does not), which is how Metamapper recognises a renamed table.
The database named in the URL is inspected, or every non-system one if none is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pymysql

from metamapper.catalog import Column, Index, Schema, Table
from metamapper.inspectors import DatastoreUnavailable, InspectionError
from metamapper.inspectors.assemble import CatalogBuilder
from metamapper_urls import parse_url, redact_text

T = TypeVar("T")

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


#: InnoDB's tables, named ``<schema>/<table>``: MariaDB and MySQL 5 spell the view
#: INNODB_SYS_TABLES, MySQL 8 INNODB_TABLES.
INNODB_TABLES = ("INNODB_SYS_TABLES", "INNODB_TABLES")


def inspect(url: str) -> list[Schema]:
    database = parse_url(url).path.lstrip("/") or None
    return query(url, lambda cursor: _read(cursor, database))


def version(url: str) -> str:
    def read(cursor: Any) -> str:
        cursor.execute("SELECT VERSION()")
        return str(cursor.fetchone()[0])

    return query(url, read)


def query(url: str, read: Callable[[Any], T], *, use_database: bool = False) -> T:
    """``read(cursor)`` on a connection to ``url`` (its database selected if asked), with
    the driver's errors as inspection errors (no password in them)."""
    database = parse_url(url).path.lstrip("/") if use_database else None
    try:
        conn = pymysql.connect(**connect_args(url), database=database or None)
    except pymysql.err.OperationalError as exc:
        raise DatastoreUnavailable(redact_text(str(exc))) from None
    try:
        with conn.cursor() as cursor:
            return read(cursor)
    except pymysql.err.OperationalError as exc:
        raise DatastoreUnavailable(redact_text(str(exc))) from None
    except pymysql.err.MySQLError as exc:
        raise InspectionError(redact_text(str(exc))) from None
    finally:
        conn.close()


def _innodb_ids(cursor: Any) -> dict[str, str]:
    """InnoDB's table ids by ``schema/table``; empty when the user may not read them."""
    for view in INNODB_TABLES:
        try:
            cursor.execute(f"SELECT NAME, TABLE_ID FROM information_schema.{view}")
        except (pymysql.err.OperationalError, pymysql.err.ProgrammingError):
            continue
        return {name: str(table_id) for name, table_id in cursor.fetchall()}
    return {}


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

    innodb = _innodb_ids(cursor)
    cursor.execute(TABLES.format(schemas=in_schemas), names)
    for schema, name, table_type, comment in cursor.fetchall():
        if table_type in _TABLE_TYPES:
            table_type = _TABLE_TYPES[table_type]
            comment = comment if comment and table_type != "view" else None
            catalog.table(schema, (schema, name), Table(
                name, table_type, comment, rename_ref=innodb.get(f"{schema}/{name}")))

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
