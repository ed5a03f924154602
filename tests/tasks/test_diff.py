"""Matching and diffing without databases."""

from __future__ import annotations

from metamapper.catalog import Column, Index, Schema, Table
from metamapper.revisioner.diff import (
    CREATED,
    DROPPED,
    MODIFIED,
    NAME_FIRST,
    diff_schema,
    dropped_schemas,
    match,
)


def _stored(schema: Schema) -> Schema:
    """``schema`` as the metastore would return it: every object has an id."""
    schema.id = f"s:{schema.name}"
    for table in schema.tables:
        table.id = f"t:{table.name}"
        children: list[Column | Index] = [*table.columns, *table.indexes]
        for child in children:
            child.id = f"{table.name}:{child.name}"
    return schema


def _orders(*columns: Column, native: bool = False) -> Schema:
    table = Table("orders", columns=list(columns), native_id="10" if native else None)
    return Schema("public", native_id="1" if native else None, tables=[table])


def _summary(revisions: list) -> set[tuple[str, str, str | None]]:
    return {(r.action, r.path, r.field) for r in revisions}


def test_new_schema_is_one_created_revision() -> None:
    new = _orders(Column("id", 1, "integer"))
    [revision] = diff_schema(None, new)
    assert (revision.action, revision.kind, revision.path) == (CREATED, "schema", "public")
    assert revision.new_value["tables"][0]["columns"][0]["name"] == "id"


def test_rename_by_native_id() -> None:
    old = _stored(_orders(Column("total", 2, "numeric", native_id="10.2"), native=True))
    new = _orders(Column("amount", 2, "numeric", native_id="10.2"), native=True)
    [revision] = diff_schema(old, new)
    assert (revision.action, revision.field, revision.old_value, revision.new_value) == (
        MODIFIED, "name", "total", "amount",
    )
    assert revision.object_id == "orders:total"


def test_same_name_new_native_id_is_drop_and_create() -> None:
    old = _stored(_orders(Column("total", 2, "numeric", native_id="10.2"), native=True))
    new = _orders(Column("total", 3, "numeric", native_id="10.3"), native=True)
    assert _summary(diff_schema(old, new)) == {
        (DROPPED, "public.orders.total", None), (CREATED, "public.orders.total", None),
    }


def test_rename_by_shape_without_native_ids() -> None:
    old = _stored(_orders(Column("id", 1, "int"), Column("total", 2, "decimal", 10, 2)))
    new = _orders(Column("id", 1, "int"), Column("amount", 2, "decimal", 10, 2))
    assert _summary(diff_schema(old, new)) == {(MODIFIED, "public.orders.amount", "name")}


def test_ambiguous_shapes_are_not_guessed() -> None:
    old = _stored(Schema("main", tables=[Table("a"), Table("b")]))
    new = Schema("main", tables=[Table("c"), Table("d")])
    actions = sorted(r.action for r in diff_schema(old, new))
    assert actions == [CREATED, CREATED, DROPPED, DROPPED]


def test_table_rename_by_shape_keeps_columns() -> None:
    old = _stored(Schema("main", tables=[Table("a", columns=[Column("x", 1, "int")])]))
    new = Schema("main", tables=[Table("b", columns=[Column("x", 1, "int")])])
    assert _summary(diff_schema(old, new)) == {(MODIFIED, "main.b", "name")}


def test_modified_fields_and_indexes() -> None:
    old = _stored(Schema("s", tables=[Table(
        "t", columns=[Column("c", 1, "varchar", 50, nullable=True)],
        indexes=[Index("t_c", ["c"])],
    )]))
    new = Schema("s", tables=[Table(
        "t", comment="facts", columns=[Column("c", 1, "text", None, nullable=False)],
        indexes=[Index("t_c", ["c"], is_unique=True), Index("t_c2", ["c"])],
    )])
    assert _summary(diff_schema(old, new)) == {
        (MODIFIED, "s.t", "comment"),
        (MODIFIED, "s.t.c", "data_type"),
        (MODIFIED, "s.t.c", "max_length"),
        (MODIFIED, "s.t.c", "nullable"),
        (MODIFIED, "s.t.t_c", "is_unique"),
        (CREATED, "s.t.t_c2", None),
    }


def test_unchanged_is_empty() -> None:
    schema = _orders(Column("id", 1, "integer"), Column("note", 2, "text"))
    assert diff_schema(_stored(_orders(*schema.tables[0].columns)), schema) == []


def test_match_and_dropped_schemas() -> None:
    stored = [_stored(Schema("a")), _stored(Schema("b", native_id=None))]
    pairs, dropped, created = match(stored, [Schema("a"), Schema("c", tables=[Table("x")])])
    assert [(o.name, n.name) for o, n in pairs] == [("a", "a")]
    assert [s.name for s in dropped] == ["b"]
    assert [s.name for s in created] == ["c"]
    [revision] = dropped_schemas(stored, {"s:a"})
    assert (revision.action, revision.path, revision.object_id) == (DROPPED, "b", "s:b")


def test_name_first_keeps_a_name_whatever_its_native_id() -> None:
    """Metamapper's identity: a table dropped and created again under its name is the same
    object; a rename is found by the native id, then by shape."""
    old = _stored(Schema("s", tables=[
        Table("kept", native_id="1", columns=[Column("a", 1, "int", native_id="1/1")]),
        Table("before", native_id="2", columns=[Column("x", 1, "int", native_id="2/1")]),
        Table("shaped", columns=[Column("y", 1, "int")]),
    ]))
    new = Schema("s", tables=[
        Table("kept", native_id="9", columns=[Column("a", 1, "int", native_id="9/1")]),
        Table("after", native_id="2", columns=[Column("z", 1, "int", native_id="2/1")]),
        Table("reshaped", columns=[Column("y", 1, "int")]),
    ])
    assert _summary(diff_schema(old, new, NAME_FIRST)) == {
        (MODIFIED, "s.after", "name"), (MODIFIED, "s.after.z", "name"),
        (MODIFIED, "s.reshaped", "name"),
    }
    assert (CREATED, "s.kept", None) in _summary(diff_schema(old, new))
