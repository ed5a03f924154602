"""One small DB-API wrapper over the two metastore engines (SQLite and PostgreSQL).

SQL in this package is written once, with ``?`` placeholders; the PostgreSQL side
rewrites them to psycopg's ``%s`` (so metastore SQL never contains a literal ``?``
or ``%``). Connections are in autocommit mode and :meth:`Database.transaction`
opens explicit transactions.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from metamapper.urls import engine_of, sqlite_path

DATABASE_URL_ENV = "METAMAPPER_DATABASE_URL"
HOME_ENV = "METAMAPPER_HOME"

Row = tuple[Any, ...]


def _adapt_datetime(value: datetime) -> str:
    # A fixed-width UTC form, so that SQLite compares timestamps correctly as text.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _convert_timestamp(value: bytes) -> datetime:
    return datetime.fromisoformat(value.decode())


sqlite3.register_adapter(datetime, _adapt_datetime)
sqlite3.register_converter("TIMESTAMP", _convert_timestamp)


def as_datetime(value: datetime | str) -> datetime:
    """A timestamp from a query; SQLite returns text for expressions such as ``MAX(...)``."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def default_database_url() -> str:
    """METAMAPPER_DATABASE_URL, else a SQLite file under $METAMAPPER_HOME or ~/.metamapper."""
    url = os.environ.get(DATABASE_URL_ENV)
    if url:
        return url
    home = Path(os.environ.get(HOME_ENV) or Path.home() / ".metamapper")
    return f"sqlite:///{home.absolute() / 'metamapper.db'}"


class _Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...


class Database:
    """A metastore connection: ``dialect`` is "sqlite" or "postgresql"."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = engine_of(url)
        self._depth = 0
        if self.dialect == "sqlite":
            path = Path(sqlite_path(url))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sqlite = sqlite3.connect(
                path, isolation_level=None, timeout=30, detect_types=sqlite3.PARSE_DECLTYPES
            )
            self._sqlite.execute("PRAGMA foreign_keys = ON")
            self._sqlite.execute("PRAGMA journal_mode = WAL")
        elif self.dialect == "postgresql":
            import psycopg

            self._pg = psycopg.connect(url, autocommit=True, connect_timeout=10)
        else:
            raise ValueError("the metastore is PostgreSQL or SQLite")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        if self.dialect == "sqlite":
            return self._sqlite.execute(sql, tuple(params))
        return self._pg.execute(sql.replace("?", "%s"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.dialect == "sqlite":
            self._sqlite.executemany(sql, rows)
        else:
            with self._pg.cursor() as cursor:
                cursor.executemany(sql.replace("?", "%s"), rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(row) for row in self.execute(sql, params).fetchall()]

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self.execute(sql, params).fetchone()
        return None if row is None else tuple(row)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth = 1
        try:
            if self.dialect == "sqlite":
                # IMMEDIATE takes the write lock up front: concurrent workers queue
                # instead of failing to upgrade a read lock.
                self._sqlite.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._sqlite.execute("ROLLBACK")
                    raise
                self._sqlite.execute("COMMIT")
            else:
                with self._pg.transaction():
                    yield
        finally:
            self._depth = 0

    def close(self) -> None:
        if self.dialect == "sqlite":
            self._sqlite.close()
        else:
            self._pg.close()


@contextmanager
def connect(url: str | None = None, migrate: bool = True) -> Iterator[Database]:
    """Open the metastore (``url`` or the default), bringing its schema up to date."""
    from metamapper.metastore.migrations import ensure_current

    db = Database(url or default_database_url())
    try:
        if migrate:
            ensure_current(db)
        yield db
    finally:
        db.close()
