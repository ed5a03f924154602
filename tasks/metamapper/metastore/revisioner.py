"""Runs and their tasks: Metamapper's ``revisioner_run`` and ``revisioner_runtask``.

A run has no status column: the web app derives it (:attr:`Run.status`) from
``finished_at``, ``tasks_count`` and ``fails_count``, which :func:`finish` fills in. Each
step of a run is a run task, unique by its ``path``:

- ``start_run/<run>``: the inspection; queue_runs writes it before sending the message
  (with the message's id), so a run is queued once; a ``start_run`` the web app sent
  itself writes it when it begins;
- ``revisioner/<datastore>/run_id=<run>/<schema>.json.gz``: one per schema, its
  definition kept beside it in ``revisioner_runtask_definition`` (a table of this
  worker's: the web app keeps these files in blob storage, which pods do not share);
- ``complete_run/<run>``: the soft deletes and rename corrections, once per run.

A task is PENDING until it finishes as SUCCESS or FAILURE, or is REVOKED by the run
timeout. Claiming a task records the Celery task id in ``meta_task_id``: a message
delivered again (a retry, a worker lost) carries the same id and may carry on; another
message for the same step finds it taken and stops.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from metamapper.metastore import additions

PENDING = "PENDING"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
PARTIAL = "PARTIAL"
REVOKED = "REVOKED"

#: A run is due when its datastore's interval has passed, give or take this much: the
#: beat creates runs hourly, and an hourly datastore must not miss every other hour to
#: clock jitter.
SCHEDULE_LEEWAY = timedelta(minutes=1)

#: This worker's addition to the metastore (the web app neither reads nor minds it).
DEFINITIONS_TABLE = """
CREATE TABLE IF NOT EXISTS revisioner_runtask_definition (
    runtask_id integer PRIMARY KEY REFERENCES revisioner_runtask (id) ON DELETE CASCADE,
    definition jsonb NOT NULL
)
"""


def start_path(run_id: str) -> str:
    return f"start_run/{run_id}"


def complete_path(run_id: str) -> str:
    return f"complete_run/{run_id}"


def schema_path(datastore_id: str, run_id: str, schema: str) -> str:
    return f"revisioner/{datastore_id}/run_id={run_id}/{schema}.json.gz"


@dataclass(frozen=True)
class Run:
    id: str
    datastore_id: str
    workspace_id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    tasks_count: int
    fails_count: int

    @property
    def status(self) -> str:
        """The web app's reading: a finished run whose only task was its start failed."""
        if self.finished_at is None:
            return PENDING
        if self.tasks_count == 1:
            return FAILURE
        if self.fails_count > 0:
            return PARTIAL
        return SUCCESS

    @property
    def failed(self) -> bool:
        return self.status in (FAILURE, PARTIAL)


@dataclass(frozen=True)
class RunTask:
    id: int
    run_id: str
    path: str
    status: str
    meta_task_id: str | None
    error: str | None


_RUN = (
    "id, datastore_id, workspace_id, created_at, started_at, finished_at, tasks_count,"
    " fails_count"
)
_TASK = "id, run_id, path, status, meta_task_id, error"

def get(conn: psycopg.Connection, run_id: str) -> Run | None:
    row = conn.execute(f"SELECT {_RUN} FROM revisioner_run WHERE id = %s", (run_id,)).fetchone()
    return None if row is None else Run(*row)


def recent(conn: psycopg.Connection, datastore_id: str | None = None,
           limit: int = 20) -> list[Run]:
    """The latest runs, newest first (of one datastore, given its id)."""
    rows = conn.execute(
        f"SELECT {_RUN} FROM revisioner_run WHERE %(datastore)s::text IS NULL"
        " OR datastore_id = %(datastore)s::text ORDER BY created_at DESC, id LIMIT %(limit)s",
        {"datastore": datastore_id, "limit": limit},
    ).fetchall()
    return [Run(*row) for row in rows]


def tasks(conn: psycopg.Connection, run_id: str) -> list[RunTask]:
    rows = conn.execute(
        f"SELECT {_TASK} FROM revisioner_runtask WHERE run_id = %s ORDER BY id", (run_id,)
    ).fetchall()
    return [RunTask(*row) for row in rows]


def create_due(conn: psycopg.Connection, datastore_slug: str | None = None) -> list[str]:
    """A new run for each enabled datastore whose interval has passed since its last run
    was created (or, given a slug, for that datastore now), unless one is unfinished."""
    with conn.transaction():
        # Two create_runs at once (a beat tick sent twice) must not both create.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('revisioner_run'))")
        rows = conn.execute(
            """SELECT d.id, d.workspace_id FROM definitions_datastore d
                WHERE d.is_enabled AND d.deleted_at IS NULL
                  AND (%(slug)s::text IS NULL OR lower(d.slug) = lower(%(slug)s::text))
                  AND NOT EXISTS (SELECT 1 FROM revisioner_run r
                                   WHERE r.datastore_id = d.id AND (
                                         r.finished_at IS NULL
                                      OR (%(slug)s::text IS NULL
                                          AND r.created_at > now() - d.interval + %(leeway)s)))
                ORDER BY d.id""",
            {"slug": datastore_slug, "leeway": SCHEDULE_LEEWAY},
        ).fetchall()
        created = [uuid.uuid4().hex for _ in rows]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO revisioner_run (id, created_at, datastore_id, workspace_id,"
                " tasks_count, fails_count) VALUES (%s, now(), %s, %s, 0, 0)",
                [(run_id, *row) for run_id, row in zip(created, rows, strict=True)],
            )
    return created


def unqueued(conn: psycopg.Connection, datastore_slug: str | None = None) -> list[Run]:
    """Runs not started, not finished and not queued yet, oldest first."""
    rows = conn.execute(
        f"""SELECT {_RUN} FROM revisioner_run r
             WHERE started_at IS NULL AND finished_at IS NULL
               AND (%(slug)s::text IS NULL OR datastore_id IN (
                    SELECT id FROM definitions_datastore
                     WHERE lower(slug) = lower(%(slug)s::text)))
               AND NOT EXISTS (SELECT 1 FROM revisioner_runtask t
                                WHERE t.path = 'start_run/' || r.id)
             ORDER BY created_at, id""",
        {"slug": datastore_slug},
    ).fetchall()
    return [Run(*row) for row in rows]


def mark_queued(conn: psycopg.Connection, run_id: str, task_id: str) -> bool:
    """Record that the start of ``run_id`` was sent as Celery task ``task_id``; False if it
    had been already."""
    row = conn.execute(
        "INSERT INTO revisioner_runtask (run_id, path, status, meta_task_id)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (path) DO NOTHING RETURNING id",
        (run_id, start_path(run_id), PENDING, task_id),
    ).fetchone()
    return row is not None


class UnknownRun(LookupError):
    """No run has this id: not committed yet by its sender, rolled back, hard-deleted
    since, or never one."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r} in the metastore")
        self.run_id = run_id


def claim(conn: psycopg.Connection, run_id: str, path: str, task_id: str) -> RunTask | None:
    """The PENDING run task ``path`` of an unfinished run, now run by Celery task
    ``task_id`` (created if missing); None if it is finished, another task's, or its run
    is finished (a message delivered again: nothing to do). Raises :class:`UnknownRun`
    if no run has that id (a message sent before its run was committed, a run
    hard-deleted since, or a wrong id: not the same thing as a run that is done)."""
    with conn.transaction():
        run = conn.execute(
            "SELECT finished_at FROM revisioner_run WHERE id = %s FOR UPDATE", (run_id,)
        ).fetchone()
        if run is None:
            raise UnknownRun(run_id)
        if run[0] is not None:
            return None
        conn.execute(
            "INSERT INTO revisioner_runtask (run_id, path, status, meta_task_id)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (path) DO NOTHING",
            (run_id, path, PENDING, task_id),
        )
        row = conn.execute(
            f"UPDATE revisioner_runtask SET meta_task_id = %(task)s,"
            " started_at = coalesce(started_at, now())"
            " WHERE path = %(path)s AND run_id = %(run)s AND status = %(pending)s"
            " AND (meta_task_id IS NULL OR meta_task_id = %(task)s)"
            f" RETURNING {_TASK}",
            {"task": task_id, "path": path, "run": run_id, "pending": PENDING},
        ).fetchone()
        if row is not None and path == start_path(run_id):
            conn.execute(
                "UPDATE revisioner_run SET started_at = coalesce(started_at, now())"
                " WHERE id = %s",
                (run_id,),
            )
    return None if row is None else RunTask(*row)


def add_schema_tasks(
    conn: psycopg.Connection, run_id: str, definitions: Sequence[tuple[str, dict[str, Any]]]
) -> list[int]:
    """A PENDING task per (path, definition) with its definition; returns the ids of the
    run's schema tasks still PENDING (all of them, unless this is a redelivery)."""
    additions.ensure(conn, DEFINITIONS_TABLE)
    with conn.transaction():
        for path, definition in definitions:
            row = conn.execute(
                "INSERT INTO revisioner_runtask (run_id, path, status) VALUES (%s, %s, %s)"
                " ON CONFLICT (path) DO UPDATE SET path = EXCLUDED.path RETURNING id",
                (run_id, path, PENDING),
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO revisioner_runtask_definition (runtask_id, definition)"
                " VALUES (%s, %s) ON CONFLICT (runtask_id)"
                " DO UPDATE SET definition = EXCLUDED.definition",
                (row[0], Jsonb(definition)),
            )
        rows = conn.execute(
            "SELECT id FROM revisioner_runtask WHERE run_id = %s AND path LIKE 'revisioner/%%'"
            " AND status = %s ORDER BY id",
            (run_id, PENDING),
        ).fetchall()
    return [row[0] for row in rows]


def schema_task(conn: psycopg.Connection, task_id: int) -> tuple[RunTask, dict[str, Any]] | None:
    """A schema task with its definition; None if either is gone."""
    additions.ensure(conn, DEFINITIONS_TABLE)
    row = conn.execute(
        f"SELECT {', '.join('t.' + c.strip() for c in _TASK.split(','))}, d.definition"
        " FROM revisioner_runtask t JOIN revisioner_runtask_definition d ON d.runtask_id = t.id"
        " WHERE t.id = %s",
        (task_id,),
    ).fetchone()
    return None if row is None else (RunTask(*row[:-1]), row[-1])


def finish_task(conn: psycopg.Connection, task_id: int, error: str | None = None) -> bool:
    """Mark a PENDING task SUCCESS (no error) or FAILURE; False if it was not PENDING."""
    status = SUCCESS if error is None else FAILURE
    return conn.execute(
        "UPDATE revisioner_runtask SET status = %s, error = %s, finished_at = now()"
        " WHERE id = %s AND status = %s",
        (status, error, task_id, PENDING),
    ).rowcount > 0


def note_error(conn: psycopg.Connection, task_id: int, error: str) -> None:
    """Record why a PENDING task is waiting (e.g. before a retry), leaving it PENDING."""
    conn.execute(
        "UPDATE revisioner_runtask SET error = %s WHERE id = %s AND status = %s",
        (error, task_id, PENDING),
    )


def finish_schema_task(
    conn: psycopg.Connection, run_id: str, task_id: int, error: str | None
) -> bool:
    """Finish one schema task; True if it was the run's last schema task to finish.

    The run's row is locked first, so of two schemas finishing at once exactly one sees
    that none is left.
    """
    with conn.transaction():
        conn.execute("SELECT 1 FROM revisioner_run WHERE id = %s FOR UPDATE", (run_id,))
        if not finish_task(conn, task_id, error):
            return False
        row = conn.execute(
            "SELECT count(*) FROM revisioner_runtask WHERE run_id = %s"
            " AND path LIKE 'revisioner/%%' AND status = %s",
            (run_id, PENDING),
        ).fetchone()
    assert row is not None
    return int(row[0]) == 0


def finish(conn: psycopg.Connection, run_id: str) -> Run | None:
    """Finish a run: count its tasks and failures (a REVOKED task counts as failed: its
    step never happened); None if it was finished already."""
    additions.ensure(conn, DEFINITIONS_TABLE)
    with conn.transaction():
        row = conn.execute(
            f"""UPDATE revisioner_run r SET finished_at = now(),
                       tasks_count = (SELECT count(*) FROM revisioner_runtask t
                                       WHERE t.run_id = r.id),
                       fails_count = (SELECT count(*) FROM revisioner_runtask t
                                       WHERE t.run_id = r.id AND t.status IN (%s, %s))
                 WHERE r.id = %s AND r.finished_at IS NULL RETURNING {_RUN}""",
            (FAILURE, REVOKED, run_id),
        ).fetchone()
        # The definitions were only needed until the run's schemas were written.
        conn.execute(
            "DELETE FROM revisioner_runtask_definition WHERE runtask_id IN"
            " (SELECT id FROM revisioner_runtask WHERE run_id = %s)",
            (run_id,),
        )
    return None if row is None else Run(*row)


def timed_out(conn: psycopg.Connection, minutes: float) -> list[str]:
    """Unfinished runs created at least ``minutes`` ago."""
    rows = conn.execute(
        "SELECT id FROM revisioner_run WHERE finished_at IS NULL"
        " AND created_at <= now() - make_interval(secs => %s) ORDER BY created_at",
        (minutes * 60,),
    ).fetchall()
    return [row[0] for row in rows]


def revoke_pending(conn: psycopg.Connection, run_id: str) -> list[str]:
    """Mark a run's PENDING tasks REVOKED, and its start too if it never began (so that
    the run reads as failed); returns the Celery task ids of those that were PENDING."""
    conn.execute(
        "INSERT INTO revisioner_runtask (run_id, path, status, finished_at)"
        " VALUES (%s, %s, %s, now()) ON CONFLICT (path) DO NOTHING",
        (run_id, start_path(run_id), REVOKED),
    )
    rows = conn.execute(
        "UPDATE revisioner_runtask SET status = %s, finished_at = now()"
        " WHERE run_id = %s AND status = %s RETURNING meta_task_id",
        (REVOKED, run_id, PENDING),
    ).fetchall()
    return [row[0] for row in rows if row[0]]
