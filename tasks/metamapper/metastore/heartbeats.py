"""The last tick of the beat's heartbeat, as recorded by the worker that ran it."""

from __future__ import annotations

from datetime import datetime

from metamapper.metastore.connection import Database


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
