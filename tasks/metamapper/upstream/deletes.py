"""Hard deletes: ``app.definitions.tasks.core.hard_delete_datastore`` and
``app.authentication.tasks.hard_delete_workspace``.

The web app soft-deletes a datastore or a workspace at once and leaves the removal of
the rows to the worker. Metamapper's foreign keys have no ``ON DELETE`` action (Django
cascades itself), so the worker does what Django's cascade does: it deletes the row and,
recursively, every row that references a deleted one, in one transaction. The references
are read from the database's own catalog, so every table of the web app's schema is
covered, including tables this image never writes. (Upstream's two ``DO_NOTHING`` links,
a table to its schema and a column to its table, are the ones upstream deletes by hand,
schema by schema; following them gives the same result.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from metamapper.celery import app
from metamapper.metastore import open_metastore


@dataclass(frozen=True)
class Reference:
    """``child.column`` refers to ``parent.parent_column`` (a one-column foreign key)."""

    child: str
    column: str
    parent_column: str


def references(conn: psycopg.Connection) -> dict[str, list[Reference]]:
    """The foreign keys of the current schema, by the table they refer to."""
    rows = conn.execute(
        """SELECT parent.relname, child.relname, child_column.attname, parent_column.attname
             FROM pg_constraint c
             JOIN pg_class child ON child.oid = c.conrelid
             JOIN pg_class parent ON parent.oid = c.confrelid
             JOIN pg_attribute child_column
               ON child_column.attrelid = c.conrelid AND child_column.attnum = c.conkey[1]
             JOIN pg_attribute parent_column
               ON parent_column.attrelid = c.confrelid AND parent_column.attnum = c.confkey[1]
            WHERE c.contype = 'f' AND cardinality(c.conkey) = 1
              AND c.connamespace = current_schema()::regnamespace"""
    ).fetchall()
    found: dict[str, list[Reference]] = defaultdict(list)
    for parent, child, column, parent_column in rows:
        found[parent].append(Reference(child, column, parent_column))
    return found


def delete_cascading(conn: psycopg.Connection, table: str, column: str,
                     values: Sequence[Any]) -> int:
    """Delete the rows of ``table`` whose ``column`` is one of ``values`` and everything
    that refers to them; returns how many rows were deleted in all.

    The keys are deferred until commit, so the order of the deletes within the
    transaction does not matter, and a cycle ends once its rows are gone.
    """
    refers_to = references(conn)
    pending: list[tuple[str, str, list[Any]]] = [(table, column, list(values))]
    deleted = 0
    with conn.transaction():
        while pending:
            table, column, values = pending.pop()
            keys = sorted({ref.parent_column for ref in refers_to.get(table, ())})
            returning = sql.SQL(", ").join(map(sql.Identifier, keys)) if keys else sql.SQL("1")
            rows = conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} = ANY(%s) RETURNING {}").format(
                    sql.Identifier(table), sql.Identifier(column), returning),
                (values,),
            ).fetchall()
            deleted += len(rows)
            for ref in refers_to.get(table, ()):
                position = keys.index(ref.parent_column)
                found = [row[position] for row in rows if row[position] is not None]
                if found:
                    pending.append((ref.child, ref.column, found))
    return deleted


@app.task(name="app.definitions.tasks.core.hard_delete_datastore")
def hard_delete_datastore(datastore_id: str, *args: Any, **kwargs: Any) -> int:
    """Remove a datastore with its schemas, tables, columns, runs, checks, usage, ..."""
    with open_metastore() as conn:
        return delete_cascading(conn, "definitions_datastore", "id", [datastore_id])


@app.task(name="app.authentication.tasks.hard_delete_workspace")
def hard_delete_workspace(workspace_id: str, *args: Any, **kwargs: Any) -> int:
    """Remove a workspace with everything that belongs to it."""
    with open_metastore() as conn:
        return delete_cascading(conn, "auth_workspaces", "id", [workspace_id])
