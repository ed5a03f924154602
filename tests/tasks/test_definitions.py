"""A datastore's catalog in Metamapper's definitions_* tables, from real PostgreSQL and
MariaDB datastores: upsert by object_id, soft delete, rename correction by object_ref."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from metamapper.inspectors.mysql import connect_args
from metamapper.metastore import (
    datastores,
    definitions,
    revision_log,
    workspaces,
)
from metamapper.metastore import revisioner as runs
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.revisioner import steps
from metamapper.revisioner.collector import SchemaDefinition, TableRow, hashed
from tests.tasks.sql_scripts import Execute, on_mariadb, on_postgres


@dataclass(frozen=True)
class Registered:
    datastore_id: str
    workspace_id: str
    url: str
    execute: Execute


def register(conn: psycopg.Connection, url: str, engine: str, name: str = "shop") -> str:
    """A workspace and a datastore of ``url``, registered as the web app registers them."""
    parts = conninfo_to_dict(url) if engine == "postgresql" else _mysql_parts(url)
    user = workspaces.create_user(conn, f"owner-{name}@example.org")
    workspace = workspaces.create_workspace(conn, f"ws-{name}", "Workspace", user)
    return datastores.register(
        conn, workspace.id, name,
        ConnectionSettings(engine, str(parts["host"]), int(parts.get("port") or 0),
                           str(parts["dbname"]), str(parts["user"]),
                           str(parts.get("password") or "")),
        incident_contacts=["oncall@example.org"],
    )


def _mysql_parts(url: str) -> dict[str, object]:
    args = connect_args(url)
    return {"host": args["host"], "port": args["port"], "user": args["user"],
            "password": args["password"], "dbname": url.rsplit("/", 1)[1]}


def run_once(conn: psycopg.Connection, datastore_id: str) -> str:
    """One run, every step in this process; it must succeed."""
    run = steps.run_now(conn, datastore_id)
    assert run.status == "SUCCESS", runs.tasks(conn, run.id)
    return run.id


def tables(conn: psycopg.Connection, datastore_id: str) -> dict[str, tuple[object, ...]]:
    """Every table row of the datastore, deleted or not: name -> (id, object_id,
    object_ref, kind, deleted, short_desc)."""
    rows = conn.execute(
        "SELECT t.name, t.id, t.object_id, t.object_ref, t.kind, t.deleted_at IS NOT NULL,"
        " t.short_desc FROM definitions_table t"
        " JOIN definitions_schema s ON s.object_id = t.schema_id WHERE s.datastore_id = %s",
        (datastore_id,),
    ).fetchall()
    assert len({row[0] for row in rows}) == len(rows), rows
    return {row[0]: tuple(row[1:]) for row in rows}


def columns(conn: psycopg.Connection, table_object_id: str) -> dict[str, tuple[object, ...]]:
    """name -> (id, ordinal, data_type, max_length, is_primary, is_nullable, default,
    deleted, short_desc)."""
    rows = conn.execute(
        "SELECT name, id, ordinal_position, data_type, max_length, is_primary, is_nullable,"
        " default_value, deleted_at IS NOT NULL, short_desc FROM definitions_column"
        " WHERE table_id = %s",
        (table_object_id,),
    ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


CREATE = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL DEFAULT 'anonymous');
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, note VARCHAR(20));
CREATE TABLE legacy (id INTEGER);
CREATE VIEW big_orders AS SELECT id FROM orders WHERE id > 100
"""


def test_postgresql_catalog_upserted_soft_deleted_and_renames_corrected(
    metastore: psycopg.Connection, postgres_dsn: str
) -> None:
    execute = on_postgres(postgres_dsn)
    execute(CREATE)
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    first_run = run_once(metastore, datastore_id)

    [(schema_object_id, schema_ref, schema_run)] = metastore.execute(
        "SELECT object_id, object_ref, run_id FROM definitions_schema WHERE datastore_id = %s"
        " AND name = 'public' AND deleted_at IS NULL", (datastore_id,)).fetchall()
    assert schema_object_id == hashed(datastore_id, "public")
    public_oid = _postgres_value(postgres_dsn, "SELECT 'public'::regnamespace::oid::text")
    assert (schema_ref, schema_run) == (public_oid, first_run)
    first = tables(metastore, datastore_id)
    assert {name: (kind, deleted) for name, (_, _, _, kind, deleted, _) in first.items()} == {
        "customers": ("base table", False), "orders": ("base table", False),
        "legacy": ("base table", False), "big_orders": ("view", False),
    }
    orders_id, orders_object_id, orders_ref, *_ = first["orders"]
    assert orders_object_id == hashed(schema_object_id, "orders")
    assert orders_ref == _postgres_value(postgres_dsn, "SELECT 'orders'::regclass::oid::text")
    customers = columns(metastore, hashed(schema_object_id, "customers"))
    assert customers["id"][1:7] == (1, "integer", 32, True, False, "")
    assert customers["name"][1:6] == (2, "character varying", 50, False, False)
    assert "anonymous" in str(customers["name"][6])

    # What people write in the web app stays on the object.
    metastore.execute("UPDATE definitions_table SET short_desc = 'what was bought'"
                      " WHERE id = %s", (orders_id,))
    note_id = columns(metastore, orders_object_id)["note"][0]
    metastore.execute("UPDATE definitions_column SET short_desc = 'free text' WHERE id = %s",
                      (note_id,))

    execute("DROP TABLE legacy CASCADE; ALTER TABLE orders RENAME TO purchases;"
            " ALTER TABLE purchases RENAME COLUMN note TO remark;"
            " ALTER TABLE customers ADD COLUMN phone TEXT")
    second_run = run_once(metastore, datastore_id)

    second = tables(metastore, datastore_id)
    assert set(second) == {"customers", "purchases", "legacy", "big_orders"}
    assert second["legacy"][4] is True  # soft-deleted, the row kept
    assert all(c[7] for c in columns(metastore, first["legacy"][1]).values())
    # The renamed table is the same row under its new name and identity.
    purchases_id, purchases_object_id, purchases_ref, _, deleted, desc = second["purchases"]
    assert (purchases_id, purchases_ref, deleted, desc) == (
        orders_id, orders_ref, False, "what was bought")
    assert purchases_object_id == hashed(schema_object_id, "purchases")
    purchases = columns(metastore, purchases_object_id)
    assert set(purchases) == {"id", "customer_id", "remark"}
    assert purchases["remark"][0] == note_id and purchases["remark"][8] == "free text"
    assert not any(c[7] for c in purchases.values())
    assert metastore.execute(
        "SELECT count(*) FROM definitions_column WHERE table_id = %s", (orders_object_id,)
    ).fetchone() == (0,)
    assert set(columns(metastore, hashed(schema_object_id, "customers"))) == {
        "id", "name", "phone"}
    assert metastore.execute(
        "SELECT DISTINCT run_id FROM definitions_table WHERE deleted_at IS NULL"
        " AND schema_id = %s", (schema_object_id,)).fetchall() == [(second_run,)]

    # The revision history of the second run (the worker's own table).
    changes = revision_log.history(metastore, datastore_id, run_id=second_run)
    assert {(c.action, c.kind, c.path, c.field, c.old_value, c.new_value)
            for c in changes if c.action != "CREATED"} == {
        ("DROPPED", "table", "public.legacy", None, None, None),
        ("MODIFIED", "table", "public.purchases", "name", "orders", "purchases"),
        ("MODIFIED", "column", "public.purchases.remark", "name", "note", "remark"),
    }
    [created] = [c for c in changes if c.action == "CREATED"]
    assert (created.kind, created.path) == ("column", "public.customers.phone")
    everything = revision_log.history(metastore, datastore_id)
    assert [(c.run_id, c.action, c.path) for c in everything[:1]] == [
        (first_run, "CREATED", "public")]
    assert everything[1:] == changes  # oldest first; the first run created the schema
    assert revision_log.history(metastore, datastore_id, limit=2) == changes[-2:]

    # A table created again under its old name comes back as the same row.
    execute("CREATE TABLE legacy (id INTEGER)")
    run_once(metastore, datastore_id)
    third = tables(metastore, datastore_id)
    assert third["legacy"][0] == first["legacy"][0] and third["legacy"][4] is False
    assert {name: row[0] for name, row in third.items()} == {
        name: row[0] for name, row in second.items()}


def test_renames_are_matched_within_one_datastore_only(
    metastore: psycopg.Connection, postgres_dsn: str
) -> None:
    """Two datastores on one server share oids (here: the same database twice); a table
    dropped in one is not revived by a namesake of the other."""
    execute = on_postgres(postgres_dsn)
    execute("CREATE TABLE alpha (id INTEGER)")
    one = register(metastore, postgres_dsn, "postgresql", name="one")
    run_once(metastore, one)
    execute("ALTER TABLE alpha RENAME TO beta")
    two = register(metastore, postgres_dsn, "postgresql", name="two")
    run_once(metastore, two)
    run_once(metastore, one)
    assert {name: row[4] for name, row in tables(metastore, two).items()} == {"beta": False}
    assert {name: row[4] for name, row in tables(metastore, one).items()} == {"beta": False}
    assert tables(metastore, one)["beta"][0] != tables(metastore, two)["beta"][0]


def test_mariadb_catalog_and_a_renamed_table(
    metastore: psycopg.Connection, mariadb_dsn: str
) -> None:
    execute = on_mariadb(mariadb_dsn)
    execute(CREATE)
    datastore_id = register(metastore, mariadb_dsn, "mysql")
    run_once(metastore, datastore_id)
    first = tables(metastore, datastore_id)
    assert {name: row[3] for name, row in first.items()} == {
        "customers": "base table", "orders": "base table", "legacy": "base table",
        "big_orders": "view",
    }
    schema_object_id = hashed(datastore_id, mariadb_dsn.rsplit("/", 1)[1])
    assert first["orders"][1] == hashed(schema_object_id, "orders")

    execute("DROP TABLE legacy; RENAME TABLE orders TO purchases")
    run_once(metastore, datastore_id)
    second = tables(metastore, datastore_id)
    assert second["legacy"][4] is True
    # InnoDB's table id survives RENAME TABLE: the same row, renamed.
    assert second["purchases"][0] == first["orders"][0] and second["purchases"][4] is False
    assert "orders" not in second


def _postgres_value(url: str, query: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return str(row[0])


def test_only_this_runs_deletions_are_corrected(
    metastore: psycopg.Connection, postgres_dsn: str
) -> None:
    """A table dropped long ago is not revived onto a new table that reuses its oid; a
    table renamed in this run is."""
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    workspace_id = datastores.load(metastore, datastore_id).workspace_id

    def run(*table_refs: tuple[str, str]) -> None:
        [run_id] = runs.create_due(metastore, datastores.load(metastore, datastore_id).slug)
        claimed = runs.claim(metastore, run_id, runs.start_path(run_id), "m")
        assert claimed is not None
        started = runs.get(metastore, run_id)
        assert started is not None and started.started_at is not None
        owner = definitions.Owner(run_id, datastore_id, workspace_id)
        schema_id = hashed(datastore_id, "public")
        definitions.write_schema(metastore, owner, SchemaDefinition(
            schema_id, "2200", "public",
            tuple(TableRow(hashed(schema_id, name), ref, name, "base table", None, ())
                  for name, ref in table_refs)))
        definitions.complete(metastore, owner, since=started.started_at)
        runs.finish(metastore, run_id)

    run(("dropped", "16384"))
    first = tables(metastore, datastore_id)["dropped"][0]
    run()
    run(("reused", "16384"))
    after = tables(metastore, datastore_id)
    assert after["dropped"][4] is True and after["reused"][0] != first
    run(("renamed", "16384"))
    assert tables(metastore, datastore_id)["renamed"][0] == after["reused"][0]
