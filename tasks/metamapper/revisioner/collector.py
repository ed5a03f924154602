"""An inspected catalog as the rows of Metamapper's ``definitions_*`` tables.

Every object gets the two identifiers Metamapper 1.0 keys its catalog on:

- ``object_id``: an MD5 of the parent's ``object_id`` (the datastore's id for a schema)
  followed by the object's name. It is what a run upserts on, so a name seen again is
  the same row, and a name not seen again is soft-deleted.
- ``object_ref``: the engine's own identifier (a PostgreSQL oid, ``oid/attnum`` for a
  column; InnoDB's table id), or, for engines without one, an MD5 of the names, the way
  Metamapper's MySQL inspector makes one. A renamed object keeps its ``object_ref``: that is how the
  completion of a run finds the old row of a renamed object and moves it to the new name
  (see :mod:`metamapper.metastore.definitions`).

The rows carry no run, datastore or workspace: the writer adds those.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from metamapper.catalog import Column, Schema, Table

#: ``definitions_column`` keeps a type and a default of at most this many characters.
MAX_TEXT = 255

#: Our inspectors' table types -> the ``kind`` Metamapper stores (information_schema's
#: ``table_type``, lower case).
KINDS = {
    "table": "base table",
    "partitioned table": "base table",
    "view": "view",
    "foreign table": "foreign",
    "materialized view": "materialized view",
}


def hashed(*parts: object) -> str:
    """Metamapper's object id: the MD5 (hex) of the parts' strings, concatenated."""
    return hashlib.md5("".join(map(str, parts)).encode()).hexdigest()


@dataclass(frozen=True)
class ColumnRow:
    object_id: str
    object_ref: str
    name: str
    ordinal_position: int
    data_type: str
    max_length: int | None
    numeric_scale: int | None
    is_primary: bool
    is_nullable: bool
    default_value: str
    db_comment: str | None


@dataclass(frozen=True)
class TableRow:
    object_id: str
    object_ref: str
    name: str
    kind: str
    db_comment: str | None
    columns: tuple[ColumnRow, ...]


@dataclass(frozen=True)
class SchemaDefinition:
    """One schema with its tables and their columns: what one ``process_schema`` writes."""

    object_id: str
    object_ref: str
    name: str
    tables: tuple[TableRow, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SchemaDefinition:
        tables = tuple(
            TableRow(**{**t, "columns": tuple(ColumnRow(**c) for c in t["columns"])})
            for t in data["tables"]
        )
        return cls(**{**data, "tables": tables})


def collect(datastore_id: str, schemas: Iterable[Schema]) -> list[SchemaDefinition]:
    """The definitions of an inspected datastore's schemas, in the inspector's order."""
    return [_schema(datastore_id, schema) for schema in schemas]


def _schema(datastore_id: str, schema: Schema) -> SchemaDefinition:
    object_id = hashed(datastore_id, schema.name)
    return SchemaDefinition(
        object_id=object_id,
        object_ref=schema.native_id or hashed(schema.name),
        name=schema.name,
        tables=tuple(_table(object_id, schema.name, table) for table in schema.tables),
    )


def _table(schema_object_id: str, schema_name: str, table: Table) -> TableRow:
    object_id = hashed(schema_object_id, table.name)
    object_ref = table.native_id or table.rename_ref or hashed(f"{schema_name}/{table.name}")
    return TableRow(
        object_id=object_id,
        object_ref=object_ref,
        name=table.name,
        kind=KINDS.get(table.table_type, table.table_type),
        db_comment=table.comment,
        columns=tuple(_column(object_id, object_ref, column) for column in table.columns),
    )


def _column(table_object_id: str, table_ref: str, column: Column) -> ColumnRow:
    return ColumnRow(
        object_id=hashed(table_object_id, column.name),
        object_ref=column.native_id or hashed(f"{table_ref}/{column.name}"),
        name=column.name,
        ordinal_position=column.ordinal,
        data_type=column.data_type[:MAX_TEXT],
        max_length=column.max_length,
        numeric_scale=column.numeric_scale,
        is_primary=column.primary_key,
        is_nullable=column.nullable,
        # Metamapper stores "no default" as an empty string.
        default_value=(column.default_value or "")[:MAX_TEXT],
        db_comment=column.comment,
    )
