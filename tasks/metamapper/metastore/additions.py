"""The worker's own tables beside Metamapper's (the web app neither reads nor minds them),
created where missing by the first worker that needs them.

``CREATE TABLE IF NOT EXISTS`` alone is not safe when two workers run it at once on a
fresh metastore (PostgreSQL may then refuse one with a duplicate key in its catalog), so
creations take turns on an advisory lock; each process does it once per database.
"""

from __future__ import annotations

import psycopg

#: Any constant: the lock creations take turns on.
_LOCK_KEY = 7_216_003

_created: set[tuple[str, str]] = set()


def ensure(conn: psycopg.Connection, ddl: str) -> None:
    """Run ``ddl`` (idempotent statements) unless this process did on this database."""
    key = (conn.info.dsn, ddl)
    if key in _created:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(ddl.encode())
    _created.add(key)
