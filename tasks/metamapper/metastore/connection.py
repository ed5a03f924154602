"""The connection to Metamapper's metastore: its PostgreSQL database, named the way the
web app names it (``METAMAPPER_DB_HOST``, ``_PORT``, ``_NAME``, ``_USER``, ``_PASSWORD``,
with the web app's defaults).

:func:`open_metastore` gives a psycopg connection in autocommit mode; a caller groups
writes with ``conn.transaction()``. The password never appears in what this module
shows or raises.

The older ``Database`` wrapper below (a SQLite or PostgreSQL URL from
METAMAPPER_DATABASE_URL) serves the worker's previous, separate schema while its last
users move to Metamapper's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from metamapper.urls import engine_of, sqlite_path
from metamapper_urls import scrub

#: The web app's settings: environment variable -> default.
DB_ENV_DEFAULTS = {
    "METAMAPPER_DB_HOST": "database",
    "METAMAPPER_DB_PORT": "5432",
    "METAMAPPER_DB_NAME": "metamapper",
    "METAMAPPER_DB_USER": "postgres",
    "METAMAPPER_DB_PASSWORD": "postgres",
}
CONNECT_TIMEOUT = 10


class MetastoreUnavailable(Exception):
    """The metastore cannot be reached or refused us; the message holds no password."""


@dataclass(frozen=True)
class MetastoreSettings:
    """Where the metastore is, from METAMAPPER_DB_* (absent ones take the web app's defaults)."""

    host: str
    port: int
    name: str
    user: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetastoreSettings:
        env = os.environ if environ is None else environ
        value = {key: env.get(key, default) for key, default in DB_ENV_DEFAULTS.items()}
        port = value["METAMAPPER_DB_PORT"]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise MetastoreUnavailable(f"METAMAPPER_DB_PORT is not a port number: {port!r}")
        return cls(
            host=value["METAMAPPER_DB_HOST"], port=int(port), name=value["METAMAPPER_DB_NAME"],
            user=value["METAMAPPER_DB_USER"], password=value["METAMAPPER_DB_PASSWORD"],
        )

    @property
    def display(self) -> str:
        """``user@host:port/name``: what a log line or an error may show."""
        return f"{self.user}@{self.host}:{self.port}/{self.name}"


@contextmanager
def open_metastore(settings: MetastoreSettings | None = None) -> Iterator[psycopg.Connection]:
    """A connection to the metastore (autocommit; group writes in ``conn.transaction()``),
    closed on exit."""
    settings = settings or MetastoreSettings.from_env()
    try:
        conn = psycopg.connect(
            host=settings.host, port=settings.port, dbname=settings.name, user=settings.user,
            password=settings.password, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
            application_name="metamapper-worker",
        )
    except psycopg.Error as exc:
        message = f"metastore {settings.display}: {str(exc).strip()}"
        raise MetastoreUnavailable(scrub(message, [settings.password])) from None
    with conn:
        yield conn

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
