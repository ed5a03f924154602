"""Building the catalog tree from the flat rows the catalog queries return."""

from __future__ import annotations

from collections.abc import Hashable

from metamapper.catalog import Column, Index, Schema, Table


class CatalogBuilder:
    """Collects schemas, tables, columns and indexes keyed however the engine identifies them."""

    def __init__(self) -> None:
        self._schemas: dict[Hashable, Schema] = {}
        self._tables: dict[Hashable, Table] = {}

    def schema(self, key: Hashable, schema: Schema) -> None:
        self._schemas[key] = schema

    def table(self, schema_key: Hashable, key: Hashable, table: Table) -> None:
        schema = self._schemas.get(schema_key)
        if schema is not None:
            schema.tables.append(table)
            self._tables[key] = table

    def column(self, table_key: Hashable, column: Column) -> None:
        table = self._tables.get(table_key)
        if table is not None:
            table.columns.append(column)

    def index(self, table_key: Hashable, index: Index) -> None:
        table = self._tables.get(table_key)
        if table is not None:
            table.indexes.append(index)

    def get_table(self, key: Hashable) -> Table | None:
        return self._tables.get(key)

    def build(self) -> list[Schema]:
        """The schemas by name, tables by name, columns by ordinal, indexes by name."""
        schemas = sorted(self._schemas.values(), key=lambda s: s.name)
        for schema in schemas:
            schema.tables.sort(key=lambda t: t.name)
            for table in schema.tables:
                table.columns.sort(key=lambda c: c.ordinal)
                table.indexes.sort(key=lambda i: i.name)
        return schemas
