"""The catalog model: what an inspector reads and what the metastore keeps.

Every object has a ``native_id`` (the engine's own stable identifier, e.g. a
PostgreSQL oid; ``None`` for engines that have none) and an ``id`` (the
metastore's identifier, ``None`` until the object is stored). Revisions are
computed by matching objects on these, see :mod:`metamapper.revisioner.diff`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(slots=True)
class Column:
    kind: ClassVar[str] = "column"
    #: Fields compared between two inspections; a difference is a MODIFIED revision.
    tracked: ClassVar[tuple[str, ...]] = (
        "name", "ordinal", "data_type", "max_length", "numeric_scale",
        "nullable", "default_value", "primary_key", "comment",
    )

    name: str
    ordinal: int
    data_type: str
    max_length: int | None = None
    numeric_scale: int | None = None
    nullable: bool = True
    default_value: str | None = None
    primary_key: bool = False
    comment: str | None = None
    native_id: str | None = None
    id: str | None = None


@dataclass(slots=True)
class Index:
    kind: ClassVar[str] = "index"
    tracked: ClassVar[tuple[str, ...]] = ("name", "columns", "is_unique", "is_primary")

    name: str
    columns: list[str]
    is_unique: bool = False
    is_primary: bool = False
    native_id: str | None = None
    id: str | None = None


@dataclass(slots=True)
class Table:
    kind: ClassVar[str] = "table"
    tracked: ClassVar[tuple[str, ...]] = ("name", "table_type", "comment")

    name: str
    #: "table", "view", "materialized view", "foreign table" or "partitioned table".
    table_type: str = "table"
    comment: str | None = None
    native_id: str | None = None
    id: str | None = None
    columns: list[Column] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)
    #: The engine's id of this table as it is now, when it has one that a rename keeps
    #: but a rebuild does not (InnoDB's table id): not a ``native_id``, only a hint that
    #: a table under a new name is the one that disappeared.
    rename_ref: str | None = None


@dataclass(slots=True)
class Schema:
    kind: ClassVar[str] = "schema"
    tracked: ClassVar[tuple[str, ...]] = ("name",)

    name: str
    native_id: str | None = None
    id: str | None = None
    tables: list[Table] = field(default_factory=list)


CatalogObject = Schema | Table | Column | Index


def to_dict(obj: CatalogObject) -> dict[str, Any]:
    """A JSON-serialisable dict of ``obj`` and its children."""
    return dataclasses.asdict(obj)


def schema_from_dict(data: dict[str, Any]) -> Schema:
    tables = [table_from_dict(t) for t in data.get("tables", [])]
    return Schema(**{**data, "tables": tables})


def table_from_dict(data: dict[str, Any]) -> Table:
    columns = [Column(**c) for c in data.get("columns", [])]
    indexes = [Index(**i) for i in data.get("indexes", [])]
    return Table(**{**data, "columns": columns, "indexes": indexes})


def from_dict(kind: str, data: dict[str, Any]) -> CatalogObject:
    if kind == "schema":
        return schema_from_dict(data)
    if kind == "table":
        return table_from_dict(data)
    if kind == "column":
        return Column(**data)
    return Index(**data)
