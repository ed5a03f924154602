"""What Metamapper's web app reads from its metastore once the workers have run: a
datastore's catalog, its runs and their steps, the heartbeat. (A check's executions are
read with ``tests.tasks.test_checks.web_app_view``, the usage with
``tests.tasks.usage_world.Shop``.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from devenv.waiting import wait_until
from metamapper.metastore import revisioner as runs

#: A catalog: (schema, table) -> its columns' names, in their order.
Catalog = dict[tuple[str, str], tuple[str, ...]]


def catalog(conn: psycopg.Connection, datastore_id: str) -> Catalog:
    """The datastore's schemas, tables and columns the web app lists (not deleted)."""
    rows = conn.execute(
        """
        SELECT s.name, t.name,
               coalesce(array_agg(c.name ORDER BY c.ordinal_position)
                        FILTER (WHERE c.id IS NOT NULL), '{}')
          FROM definitions_schema s
          JOIN definitions_table t ON t.schema_id = s.object_id AND t.deleted_at IS NULL
          LEFT JOIN definitions_column c ON c.table_id = t.object_id AND c.deleted_at IS NULL
         WHERE s.datastore_id = %s AND s.deleted_at IS NULL
         GROUP BY s.name, t.name
        """, (datastore_id,)).fetchall()
    return {(schema, table): tuple(columns) for schema, table, columns in rows}


@dataclass(frozen=True)
class RunView:
    """A run as the datastore's run history shows it: its status and each step's status
    (``start_run``, one ``revisioner`` per schema, ``complete_run``)."""

    status: str
    steps: dict[str, list[str]]


def run_view(conn: psycopg.Connection, run_id: str) -> RunView | None:
    """The run once finished (None before)."""
    run = runs.get(conn, run_id)
    if run is None or run.finished_at is None:
        return None
    steps: dict[str, list[str]] = {}
    for task in runs.tasks(conn, run_id):
        steps.setdefault(task.path.split("/")[0], []).append(task.status)
    return RunView(run.status, {step: sorted(found) for step, found in steps.items()})


def finished_run(conn: psycopg.Connection, run_id: str, timeout: float) -> RunView:
    found = wait_until(lambda: run_view(conn, run_id), timeout, what=f"run {run_id} finished")
    assert found is not None
    return found


def heartbeat(conn: psycopg.Connection) -> datetime | None:
    """The beat's last heartbeat (the row the web app's /health reads)."""
    row = conn.execute("SELECT ts FROM healthchecks_heartbeat").fetchone()
    return None if row is None else row[0]
