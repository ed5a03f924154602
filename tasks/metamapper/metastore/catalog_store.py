"""The current catalog of each datastore, and applying revisions to it."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from metamapper.catalog import CatalogObject, Column, Index, Schema, Table, from_dict
from metamapper.metastore.connection import Database
from metamapper.revisioner.diff import CREATED, DROPPED, MODIFIED, Revision, new_id

#: kind -> (table, parent column)
_TABLES = {
    "schema": ("catalog_schemas", "datastore_id"),
    "table": ("catalog_tables", "schema_id"),
    "column": ("catalog_columns", "table_id"),
    "index": ("catalog_indexes", "table_id"),
}


def load(db: Database, datastore_id: int) -> list[Schema]:
    """The stored catalog of a datastore, with metastore ids."""
    schemas = [
        Schema(name=name, native_id=native_id, id=id_)
        for id_, native_id, name in db.fetchall(
            "SELECT id, native_id, name FROM catalog_schemas WHERE datastore_id = ? ORDER BY name",
            (datastore_id,),
        )
    ]
    tables: dict[str, Table] = {}
    by_schema = {s.id: s for s in schemas}
    for schema_id, id_, native_id, name, table_type, comment in db.fetchall(
        "SELECT t.schema_id, t.id, t.native_id, t.name, t.table_type, t.comment"
        " FROM catalog_tables t JOIN catalog_schemas s ON s.id = t.schema_id"
        " WHERE s.datastore_id = ? ORDER BY t.name",
        (datastore_id,),
    ):
        table = Table(name, table_type, comment, native_id, id_)
        by_schema[schema_id].tables.append(table)
        tables[id_] = table
    for table_id, *values in db.fetchall(
        "SELECT c.table_id, c.name, c.ordinal, c.data_type, c.max_length, c.numeric_scale,"
        " c.nullable, c.default_value, c.primary_key, c.comment, c.native_id, c.id"
        f" FROM catalog_columns c {_JOIN_TABLE} ORDER BY c.ordinal",
        (datastore_id,),
    ):
        column = Column(*values)
        column.nullable, column.primary_key = bool(column.nullable), bool(column.primary_key)
        tables[table_id].columns.append(column)
    for table_id, name, columns, is_unique, is_primary, native_id, id_ in db.fetchall(
        "SELECT c.table_id, c.name, c.columns, c.is_unique, c.is_primary, c.native_id, c.id"
        f" FROM catalog_indexes c {_JOIN_TABLE} ORDER BY c.name",
        (datastore_id,),
    ):
        index = Index(name, json.loads(columns), bool(is_unique), bool(is_primary), native_id, id_)
        tables[table_id].indexes.append(index)
    return schemas


_JOIN_TABLE = (
    "JOIN catalog_tables t ON t.id = c.table_id JOIN catalog_schemas s ON s.id = t.schema_id"
    " WHERE s.datastore_id = ?"
)


def apply(db: Database, datastore_id: int, revisions: list[Revision]) -> None:
    """Apply revisions to the stored catalog (call inside a transaction)."""
    grouped: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = defaultdict(list)
    for revision in revisions:
        table, _ = _TABLES[revision.kind]
        if revision.action == CREATED:
            obj = from_dict(revision.kind, revision.new_value)
            parent = datastore_id if revision.kind == "schema" else revision.parent_id
            for kind, row_columns, row in _rows(obj, revision.object_id, parent):
                grouped[(kind, row_columns)].append(row)
        elif revision.action == MODIFIED:
            assert revision.field is not None
            _check_field(revision.kind, revision.field)
            db.execute(
                f"UPDATE {table} SET {revision.field} = ? WHERE id = ?",
                (_encode(revision.new_value), revision.object_id),
            )
        elif revision.action == DROPPED:
            db.execute(f"DELETE FROM {table} WHERE id = ?", (revision.object_id,))
    # Parents before children, so that the foreign keys hold.
    for kind in _TABLES:
        for (row_kind, columns), rows in grouped.items():
            if row_kind == kind:
                table, _ = _TABLES[kind]
                db.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)})"
                    f" VALUES ({', '.join('?' * len(columns))})",
                    rows,
                )


_TRACKED: dict[str, tuple[str, ...]] = {
    cls.kind: cls.tracked for cls in (Schema, Table, Column, Index)
}


def _check_field(kind: str, field: str) -> None:
    # The field name is spliced into SQL: it must be one of ours.
    if field not in _TRACKED[kind]:
        raise ValueError(f"{kind} has no field {field!r}")


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def _rows(
    obj: CatalogObject, object_id: str, parent_id: Any
) -> list[tuple[str, tuple[str, ...], tuple[Any, ...]]]:
    """(kind, columns, row) for ``obj`` and its children, children getting new ids."""
    _, parent_column = _TABLES[obj.kind]
    columns = ("id", parent_column, "native_id", *obj.tracked)
    row = (object_id, parent_id, obj.native_id, *(_encode(getattr(obj, f)) for f in obj.tracked))
    rows = [(obj.kind, columns, row)]
    children: list[CatalogObject] = []
    if isinstance(obj, Schema):
        children.extend(obj.tables)
    elif isinstance(obj, Table):
        children.extend(obj.columns)
        children.extend(obj.indexes)
    for child in children:
        rows.extend(_rows(child, new_id(), object_id))
    return rows
