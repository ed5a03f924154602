"""Runs: one inspection of one datastore, from PENDING to SUCCESS, PARTIAL or FAILURE."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from metamapper.metastore.connection import Database, as_datetime

PENDING = "PENDING"
QUEUED = "QUEUED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
PARTIAL = "PARTIAL"
FAILURE = "FAILURE"
UNFINISHED = (PENDING, QUEUED, STARTED)

#: A run is due when its interval has passed, give or take this much: the beat fires
#: hourly and an hourly datastore must not miss every other tick to clock jitter.
SCHEDULE_LEEWAY = timedelta(minutes=1)


@dataclass(frozen=True)
class Run:
    id: int
    datastore_id: int
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    schemas_total: int | None
    schemas_done: int
    error: str | None


_COLUMNS = (
    "id, datastore_id, status, created_at, started_at, finished_at,"
    " schemas_total, schemas_done, error"
)


def now() -> datetime:
    return datetime.now(UTC)


def get(db: Database, run_id: int) -> Run | None:
    row = db.fetchone(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,))
    return None if row is None else Run(*row)


def recent(db: Database, datastore_id: int | None = None, limit: int = 20) -> list[Run]:
    where, params = ("WHERE datastore_id = ?", (datastore_id,)) if datastore_id else ("", ())
    rows = db.fetchall(
        f"SELECT {_COLUMNS} FROM runs {where} ORDER BY id DESC LIMIT ?", (*params, limit)
    )
    return [Run(*row) for row in rows]


def create(db: Database, datastore_id: int) -> int:
    row = db.fetchone(
        "INSERT INTO runs (datastore_id, status, created_at) VALUES (?, ?, ?) RETURNING id",
        (datastore_id, PENDING, now()),
    )
    assert row is not None
    return int(row[0])


def create_due(db: Database) -> list[int]:
    """A PENDING run for every datastore whose interval has passed and has none unfinished."""
    placeholders = ", ".join("?" * len(UNFINISHED))
    at = now()
    with db.transaction():
        rows = db.fetchall(
            "SELECT d.id, d.interval_minutes, MAX(r.created_at),"
            f" SUM(CASE WHEN r.status IN ({placeholders}) THEN 1 ELSE 0 END)"
            " FROM datastores d LEFT JOIN runs r ON r.datastore_id = d.id"
            " GROUP BY d.id, d.interval_minutes ORDER BY d.id",
            UNFINISHED,
        )
        return [
            create(db, datastore_id)
            for datastore_id, interval, last, unfinished in rows
            if not unfinished
            and (
                last is None
                or at - as_datetime(last) + SCHEDULE_LEEWAY >= timedelta(minutes=interval)
            )
        ]


def pending(db: Database) -> list[Run]:
    rows = db.fetchall(f"SELECT {_COLUMNS} FROM runs WHERE status = ? ORDER BY id", (PENDING,))
    return [Run(*row) for row in rows]


def mark_queued(db: Database, run_id: int) -> None:
    db.execute("UPDATE runs SET status = ? WHERE id = ? AND status = ?", (QUEUED, run_id, PENDING))


def begin(db: Database, run_id: int) -> Run | None:
    """Move a run to STARTED; None if it is not (or no longer) waiting for an inspection.

    A STARTED run without a snapshot is startable again: that is a retry, or a
    redelivery after the worker running it was lost.
    """
    with db.transaction():
        changed = db.execute(
            "UPDATE runs SET status = ?, started_at = ?"
            " WHERE id = ? AND (status IN (?, ?) OR (status = ? AND schemas_total IS NULL))",
            (STARTED, now(), run_id, PENDING, QUEUED, STARTED),
        ).rowcount
        return get(db, run_id) if changed else None


def save_snapshot(
    db: Database, run_id: int, schemas: list[tuple[str, str | None, dict[str, Any]]]
) -> None:
    """Store the inspected schemas: (name, matched stored schema id, schema as a dict)."""
    with db.transaction():
        db.executemany(
            "INSERT INTO run_schemas (run_id, name, catalog_schema_id, snapshot)"
            " VALUES (?, ?, ?, ?)",
            [(run_id, name, stored_id, json.dumps(data)) for name, stored_id, data in schemas],
        )
        db.execute("UPDATE runs SET schemas_total = ? WHERE id = ?", (len(schemas), run_id))


def load_snapshot(db: Database, run_id: int, name: str) -> tuple[str | None, dict[str, Any]]:
    row = db.fetchone(
        "SELECT catalog_schema_id, snapshot FROM run_schemas WHERE run_id = ? AND name = ?",
        (run_id, name),
    )
    if row is None:
        raise LookupError(f"run {run_id} has no schema {name!r}")
    return row[0], json.loads(row[1])


def matched_schema_ids(db: Database, run_id: int) -> set[str]:
    rows = db.fetchall(
        "SELECT catalog_schema_id FROM run_schemas WHERE run_id = ?"
        " AND catalog_schema_id IS NOT NULL",
        (run_id,),
    )
    return {row[0] for row in rows}


def schema_statuses(db: Database, run_id: int) -> dict[str, str]:
    rows = db.fetchall("SELECT name, status FROM run_schemas WHERE run_id = ?", (run_id,))
    return {name: status for name, status in rows}


def finish_schema(db: Database, run_id: int, name: str, status: str, error: str | None) -> bool:
    """Record one schema as DONE or FAILED; False if it was already (a duplicate delivery)."""
    return db.execute(
        "UPDATE run_schemas SET status = ?, error = ?"
        " WHERE run_id = ? AND name = ? AND status = 'PENDING'",
        (status, error, run_id, name),
    ).rowcount > 0


def count_finished_schema(db: Database, run_id: int) -> bool:
    """Count one more schema as finished; True if it was the last one.

    The counter is updated by the statement that reads it, so of two schemas
    finishing at the same time exactly one sees itself as the last.
    """
    row = db.fetchone(
        "UPDATE runs SET schemas_done = schemas_done + 1 WHERE id = ?"
        " RETURNING schemas_done, schemas_total",
        (run_id,),
    )
    assert row is not None
    return bool(row[0] >= row[1])


def finish(db: Database, run_id: int, status: str, error: str | None = None) -> bool:
    """Move an unfinished run to a final status; False if it was already final."""
    placeholders = ", ".join("?" * len(UNFINISHED))
    return db.execute(
        f"UPDATE runs SET status = ?, finished_at = ?, error = ?"
        f" WHERE id = ? AND status IN ({placeholders})",
        (status, now(), error, run_id, *UNFINISHED),
    ).rowcount > 0


def timed_out(db: Database, timeout: timedelta) -> list[int]:
    """Runs queued or started longer than ``timeout`` ago."""
    rows = db.fetchall(
        "SELECT id FROM runs WHERE (status = ? AND started_at < ?)"
        " OR (status IN (?, ?) AND created_at < ?) ORDER BY id",
        (STARTED, now() - timeout, PENDING, QUEUED, now() - timeout),
    )
    return [row[0] for row in rows]
