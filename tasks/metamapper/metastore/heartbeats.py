"""The beat's heartbeat.

Metamapper's ``healthchecks_heartbeat`` holds one row, the time of the last beat: each
beat replaces it in one transaction, and the web app's ``/health`` calls the scheduler
healthy while that time is under three minutes old. :func:`beat` and :func:`latest` are
that table's writer and reader.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg


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
