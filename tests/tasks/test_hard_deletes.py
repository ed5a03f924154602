"""Hard deletes on Metamapper's metastore, sent with the web app's keyword arguments: the
datastore or workspace and every row that refers to it go; nothing else does."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from metamapper import inspectors
from metamapper.celery import app
from metamapper.metastore import datastores, definitions, open_metastore, revisioner, workspaces
from metamapper.revisioner import collector
from tests.tasks.conftest import MetamapperDB


@dataclass(frozen=True)
class World:
    conn: psycopg.Connection
    doomed: str  # a workspace with two datastores
    kept: str  # a workspace with one
    first: str
    second: str
    other: str


def _catalog(conn: psycopg.Connection, workspace: str, datastore: str, dsn: str) -> None:
    owner = definitions.Owner(uuid.uuid4().hex, datastore, workspace)
    for schema in collector.collect(datastore, inspectors.inspect(dsn)):
        definitions.write_schema(conn, owner, schema)


@pytest.fixture
def world(metamapper_db: MetamapperDB, postgres_dsn: str) -> Iterator[World]:
    app.loader.import_default_modules()
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sales; CREATE TABLE sales.orders (id int PRIMARY KEY,"
                     " total numeric); CREATE TABLE public.notes (body text)")
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "ada@example.com")
        doomed = workspaces.create_workspace(conn, "doomed", "Doomed", user).id
        kept = workspaces.create_workspace(conn, "kept", "Kept", user).id
        settings = datastores.settings_from_url(postgres_dsn)
        ids = [datastores.register(conn, workspace, name, settings)
               for workspace, name in ((doomed, "first"), (doomed, "second"), (kept, "other"))]
        for workspace, datastore in zip((doomed, doomed, kept), ids, strict=True):
            _catalog(conn, workspace, datastore, postgres_dsn)
        revisioner.create_due(conn)
        app.tasks["app.audit.tasks.audit"].apply(
            (user, doomed), {"verb": "created", "old_values": {}, "new_values": {},
                             "target_object_id": ids[0]}, throw=True)
        yield World(conn, doomed, kept, *ids)


def owned(conn: psycopg.Connection, workspace: str) -> dict[str, int]:
    """Rows per table that belong to ``workspace`` (tables with a workspace_id)."""
    tables = [row[0] for row in conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE column_name = 'workspace_id'"
        " AND table_schema = current_schema() ORDER BY table_name")]
    counts = {table: conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE workspace_id = %s").format(sql.Identifier(table)),
        (workspace,)).fetchone() for table in tables}
    return {table: row[0] for table, row in counts.items() if row and row[0]}


def of_datastore(conn: psycopg.Connection, datastore: str) -> tuple[int, ...]:
    """Its datastore row, schemas, tables, columns and runs."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM definitions_datastore WHERE id = %(d)s),
                  (SELECT count(*) FROM definitions_schema WHERE datastore_id = %(d)s),
                  (SELECT count(*) FROM definitions_table t JOIN definitions_schema s
                     ON s.object_id = t.schema_id WHERE s.datastore_id = %(d)s),
                  (SELECT count(*) FROM definitions_column c JOIN definitions_table t
                     ON t.object_id = c.table_id JOIN definitions_schema s
                     ON s.object_id = t.schema_id WHERE s.datastore_id = %(d)s),
                  (SELECT count(*) FROM revisioner_run WHERE datastore_id = %(d)s)""",
        {"d": datastore}).fetchone()
    assert row is not None
    return tuple(row)


def test_hard_deleting_a_datastore_removes_it_and_its_catalog_only(world: World) -> None:
    before = of_datastore(world.conn, world.second)
    assert before[0] == 1 and min(before) >= 1
    deleted = app.tasks["app.definitions.tasks.core.hard_delete_datastore"].apply(
        kwargs={"datastore_id": world.first}, throw=True).get()
    assert deleted == sum(before)  # the same catalog and one run each
    assert of_datastore(world.conn, world.first) == (0, 0, 0, 0, 0)
    assert of_datastore(world.conn, world.second) == before
    assert of_datastore(world.conn, world.other) == before


def test_hard_deleting_a_workspace_removes_everything_it_owns_only(world: World) -> None:
    kept = owned(world.conn, world.kept)
    assert {"definitions_datastore", "definitions_column", "audit_activity",
            "revisioner_run"} <= set(owned(world.conn, world.doomed))
    app.tasks["app.authentication.tasks.hard_delete_workspace"].apply(
        kwargs={"workspace_id": world.doomed}, throw=True).get()
    assert owned(world.conn, world.doomed) == {}
    assert owned(world.conn, world.kept) == kept
    left = world.conn.execute("SELECT id FROM auth_workspaces").fetchall()
    assert left == [(world.kept,)]
    users = world.conn.execute("SELECT count(*) FROM auth_users").fetchone()
    assert users == (1,)
