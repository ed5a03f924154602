"""PostgreSQL: pg_catalog, a handful of queries in one read-only repeatable-read transaction.

Native ids are oids (columns: ``<table oid>/<attnum>``, as Metamapper spells them), so a
rename keeps its native id.
Per-row catalog functions are kept out of the big queries: type names are looked up
once per distinct type, index columns are named from the columns already read (only
expression indexes ask the server), comments come in one query of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

from metamapper.catalog import Column, Index, Schema, Table
from metamapper.inspectors import DatastoreUnavailable, InspectionError
from metamapper.inspectors.assemble import CatalogBuilder
from metamapper_urls import redact_text

_USER_SCHEMA = "n.nspname <> 'information_schema' AND left(n.nspname, 3) <> 'pg_'"
_RELKINDS = "c.relkind IN ('r', 'p', 'v', 'm', 'f')"
_TABLE_TYPES = {
    "r": "table", "p": "partitioned table", "v": "view", "m": "materialized view",
    "f": "foreign table",
}

SCHEMAS = f"SELECT n.oid, n.nspname FROM pg_namespace n WHERE {_USER_SCHEMA}"

TABLES = f"""
SELECT c.relnamespace, c.oid, c.relname, c.relkind
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_RELKINDS} AND {_USER_SCHEMA}
"""

COLUMNS = f"""
SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, NOT a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND {_RELKINDS} AND {_USER_SCHEMA}
"""

TYPE_NAMES = "SELECT oid, format_type(oid, NULL) FROM pg_type WHERE oid = ANY(%s)"

#: Comments on tables (objsubid 0) and their columns (objsubid = attnum).
COMMENTS = """
SELECT objoid, objsubid, description FROM pg_description
WHERE classoid = 'pg_class'::regclass
"""

# indkey is an int2vector (0-based); expressions (attnum 0) need the server to print them.
INDEXES = f"""
SELECT i.indrelid, i.indexrelid, ic.relname, i.indisunique, i.indisprimary,
       (i.indkey::int2[])[0:i.indnkeyatts - 1],
       CASE WHEN i.indexprs IS NOT NULL THEN
         ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true)
               FROM generate_series(1, i.indnkeyatts) AS k ORDER BY k)
       END
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_RELKINDS} AND {_USER_SCHEMA}
"""

T = TypeVar("T")

_BPCHAR, _VARCHAR, _NUMERIC, _BIT, _VARBIT = 1042, 1043, 1700, 1560, 1562

#: The fixed (precision, scale) information_schema reports for these types (smallint,
#: integer, bigint, real, double precision), which Metamapper stores as max_length.
FIXED_PRECISION: dict[int, tuple[int, int | None]] = {
    21: (16, 0), 23: (32, 0), 20: (64, 0), 700: (24, None), 701: (53, None),
}


def type_modifiers(type_oid: int, typmod: int) -> tuple[int | None, int | None]:
    """(length or precision, scale) of a column's type, as information_schema reports them."""
    if type_oid in FIXED_PRECISION:
        return FIXED_PRECISION[type_oid]
    if typmod < 0:
        return None, None
    if type_oid in (_BPCHAR, _VARCHAR):
        return typmod - 4, None
    if type_oid == _NUMERIC:
        return ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
    if type_oid in (_BIT, _VARBIT):
        return typmod, None
    return None, None


def inspect(url: str) -> list[Schema]:
    return query(url, _read)


def version(url: str) -> str:
    def read(cursor: psycopg.Cursor) -> str:
        row = cursor.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0])

    return query(url, read)


def query(url: str, read: Callable[[psycopg.Cursor], T]) -> T:
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.read_only = True
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.cursor() as cursor:
                return read(cursor)
    except psycopg.OperationalError as exc:
        raise DatastoreUnavailable(redact_text(str(exc))) from None
    except psycopg.Error as exc:
        raise InspectionError(redact_text(str(exc))) from None


def _read(cursor: psycopg.Cursor) -> list[Schema]:
    catalog = CatalogBuilder()
    for oid, name in cursor.execute(SCHEMAS).fetchall():
        catalog.schema(oid, Schema(name, native_id=str(oid)))
    comments = {(oid, sub): text for oid, sub, text in cursor.execute(COMMENTS).fetchall()}
    for namespace, oid, name, relkind in cursor.execute(TABLES).fetchall():
        table = Table(name, _TABLE_TYPES[relkind], comments.get((oid, 0)), str(oid))
        catalog.table(namespace, oid, table)

    rows = cursor.execute(COLUMNS).fetchall()
    type_ids = list({row[3] for row in rows})
    type_names: dict[int, str] = dict(cursor.execute(TYPE_NAMES, (type_ids,)).fetchall())
    by_attnum: dict[tuple[int, int], Column] = {}
    for relid, attnum, name, type_oid, typmod, nullable, default in rows:
        length, scale = type_modifiers(type_oid, typmod)
        column = Column(
            name, attnum, type_names[type_oid], length, scale, nullable, default,
            comment=comments.get((relid, attnum)), native_id=f"{relid}/{attnum}",
        )
        catalog.column(relid, column)
        by_attnum[(relid, attnum)] = column

    for relid, oid, name, unique, primary, attnums, expressions in (
        cursor.execute(INDEXES).fetchall()
    ):
        keys = [by_attnum.get((relid, attnum)) for attnum in attnums]
        names = expressions or [key.name if key else "" for key in keys]
        catalog.index(relid, Index(name, names, unique, primary, str(oid)))
        if primary:
            for key in keys:
                if key is not None:
                    key.primary_key = True
    return catalog.build()
