"""The beat's heartbeat.

Metamapper's ``healthchecks_heartbeat`` holds one row, the time of the last beat: each
beat replaces it in one transaction, and the web app's ``/health`` calls the scheduler
healthy while that time is under three minutes old. :func:`beat` and :func:`latest` are
that table's writer and reader. The older ``record``/``last`` pair below serves the
worker's previous, separate schema and goes with it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from metamapper.metastore.connection import Database


def beat(conn: psycopg.Connection, at: datetime | None = None) -> datetime:
    """Replace the heartbeat with one at ``at`` (now by default); returns its time."""
    at = at or datetime.now(UTC)
    with conn.transaction():
        conn.execute("DELETE FROM healthchecks_heartbeat")
        conn.execute("INSERT INTO healthchecks_heartbeat (ts) VALUES (%s)", (at,))
    return at


def latest(conn: psycopg.Connection) -> datetime | None:
    """The time of the last heartbeat, if any."""
    row = conn.execute("SELECT max(ts) FROM healthchecks_heartbeat").fetchone()
    return None if row is None else row[0]


def record(db: Database, name: str, at: datetime, hostname: str | None) -> None:
    with db.transaction():
        db.execute(
            "INSERT INTO heartbeats (name, beat_at, hostname) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET beat_at = excluded.beat_at,"
            " hostname = excluded.hostname",
            (name, at, hostname),
        )


def last(db: Database, name: str) -> tuple[datetime, str | None] | None:
    row = db.fetchone("SELECT beat_at, hostname FROM heartbeats WHERE name = ?", (name,))
    return None if row is None else (row[0], row[1])
