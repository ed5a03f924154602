"""An inspected catalog as Metamapper's definitions rows, without databases."""

from __future__ import annotations

import hashlib
import json

from metamapper.catalog import Column, Schema, Table
from metamapper.revisioner.collector import SchemaDefinition, collect, hashed


def test_ids_refs_and_values_are_metamappers() -> None:
    long_default = "x" * 300
    schema = Schema("sales", tables=[
        Table("orders", "table", "facts", native_id="16384", columns=[
            Column("id", 1, "integer", 32, 0, False, None, True, native_id="16384/1"),
            Column("note", 2, "text", default_value=long_default),
        ]),
        Table("recent", "view"),
        Table("moved", "table", rename_ref="77"),
    ])
    [definition] = collect("ds1", [schema])

    assert definition.object_id == hashlib.md5(b"ds1sales").hexdigest()
    assert definition.object_ref == hashed("sales")  # no native id: a hash of the name
    orders, recent, moved = definition.tables
    assert orders.object_id == hashed(definition.object_id, "orders")
    assert (orders.object_ref, orders.kind, orders.db_comment) == ("16384", "base table", "facts")
    assert (recent.kind, recent.object_ref) == ("view", hashed("sales/recent"))
    assert moved.object_ref == "77"
    id_, note = orders.columns
    assert id_.object_id == hashed(orders.object_id, "id")
    assert (id_.object_ref, id_.default_value, id_.is_primary) == ("16384/1", "", True)
    assert note.object_ref == hashed("16384/note")
    assert note.default_value == long_default[:255]


def test_a_definition_survives_json() -> None:
    table = Table("t", columns=[Column("c", 1, "int")])
    [definition] = collect("ds1", [Schema("s", tables=[table])])
    assert SchemaDefinition.from_json(json.loads(json.dumps(definition.to_json()))) == definition
