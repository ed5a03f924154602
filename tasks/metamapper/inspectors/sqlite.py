"""SQLite: sqlite_schema and the table-valued pragmas, one query each, read-only.

SQLite has no stable object ids (rootpages move on VACUUM), so objects are matched by
name and renames recognised by shape. The one schema is ``main``.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

from metamapper.catalog import Column, Index, Schema, Table
from metamapper.inspectors import DatastoreUnavailable, InspectionError
from metamapper.inspectors.assemble import CatalogBuilder
from metamapper.urls import sqlite_path

_USER_OBJECTS = "m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"

TABLES = f"SELECT m.name, m.type FROM sqlite_schema m WHERE {_USER_OBJECTS}"

# hidden: 0 ordinary, 1 hidden column of a virtual table, 2/3 generated columns.
COLUMNS = f"""
SELECT m.name, p.cid, p.name, p.type, p."notnull", p.dflt_value, p.pk
FROM sqlite_schema m JOIN pragma_table_xinfo(m.name) p
WHERE {_USER_OBJECTS} AND p.hidden <> 1
"""

INDEXES = f"""
SELECT m.name, il.name, il."unique", il.origin, ii.name
FROM sqlite_schema m
JOIN pragma_index_list(m.name) il
JOIN pragma_index_xinfo(il.name) ii
WHERE {_USER_OBJECTS} AND ii.key = 1
ORDER BY m.name, il.name, ii.seqno
"""

_DECLARED_TYPE = re.compile(
    r"^(?P<type>.*?)\s*(?:\(\s*(?P<len>\d+)\s*(?:,\s*(?P<scale>\d+)\s*)?\))?$"
)


def parse_type(declared: str) -> tuple[str, int | None, int | None]:
    """``"NUMERIC(10, 2)"`` -> ("NUMERIC", 10, 2)."""
    match = _DECLARED_TYPE.match(declared.strip())
    assert match is not None  # the pattern matches any string
    length, scale = match["len"], match["scale"]
    return (
        match["type"],
        int(length) if length else None,
        int(scale) if scale else None,
    )


def inspect(url: str) -> list[Schema]:
    path = Path(sqlite_path(url))
    if not path.is_file():
        raise DatastoreUnavailable(f"SQLite database {path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True)
    except sqlite3.OperationalError as exc:
        raise DatastoreUnavailable(str(exc)) from None
    try:
        return _read(conn)
    except sqlite3.OperationalError as exc:
        raise DatastoreUnavailable(str(exc)) from None
    except sqlite3.Error as exc:
        raise InspectionError(str(exc)) from None
    finally:
        conn.close()


def _read(conn: sqlite3.Connection) -> list[Schema]:
    catalog = CatalogBuilder()
    catalog.schema("main", Schema("main"))
    for name, table_type in conn.execute(TABLES):
        catalog.table("main", name, Table(name, table_type))
    for table, cid, name, declared, notnull, default, pk in conn.execute(COLUMNS):
        data_type, length, scale = parse_type(declared)
        catalog.column(table, Column(
            name, cid + 1, data_type, length, scale, not notnull, default, primary_key=pk > 0,
        ))
    indexes: dict[str, Index] = {}
    for table, name, unique, origin, column in conn.execute(INDEXES):
        index = indexes.get(name)
        if index is None:
            index = indexes[name] = Index(name, [], bool(unique), origin == "pk")
            catalog.index(table, index)
        index.columns.append(column if column is not None else "<expression>")
    return catalog.build()
