"""Datastores: the databases Metamapper inspects."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime

from metamapper.metastore.connection import Database
from metamapper.urls import engine_of
from metamapper_urls import redact


class DatastoreError(Exception):
    """A datastore is missing, duplicated or misconfigured."""


@dataclass(frozen=True)
class Datastore:
    id: int
    name: str
    engine: str
    #: The connection URL, or None when ``url_env`` names the environment variable holding it.
    url: str | None
    url_env: str | None
    interval_minutes: int
    created_at: datetime

    def connection_url(self) -> str:
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        url = os.environ.get(self.url_env)
        if not url:
            raise DatastoreError(
                f"datastore {self.name!r}: environment variable {self.url_env} is not set"
            )
        return url

    @property
    def display_url(self) -> str:
        """The URL as it may be shown: password masked, or the variable it comes from."""
        return redact(self.url) if self.url is not None else f"${self.url_env}"


_COLUMNS = "id, name, engine, url, url_env, interval_minutes, created_at"


def add(
    db: Database,
    name: str,
    *,
    url: str | None = None,
    url_env: str | None = None,
    engine: str | None = None,
    interval_minutes: int = 60,
) -> Datastore:
    """Register a datastore by its URL, or by the environment variable that holds it."""
    if (url is None) == (url_env is None):
        raise DatastoreError("give either a connection URL or the variable holding one")
    if url is not None:
        engine = engine_of(url)
    elif engine is None:
        raise DatastoreError("an engine is required when the URL comes from a variable")
    if interval_minutes < 1:
        raise DatastoreError("the inspection interval is at least one minute")
    with db.transaction():
        if get(db, name) is not None:
            raise DatastoreError(f"datastore {name!r} already exists")
        db.execute(
            "INSERT INTO datastores (name, engine, url, url_env, interval_minutes, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (name, engine, url, url_env, interval_minutes, datetime.now(UTC)),
        )
        datastore = get(db, name)
    assert datastore is not None
    return datastore


def get(db: Database, name: str) -> Datastore | None:
    row = db.fetchone(f"SELECT {_COLUMNS} FROM datastores WHERE name = ?", (name,))
    return None if row is None else Datastore(*row)


def get_by_id(db: Database, datastore_id: int) -> Datastore:
    row = db.fetchone(f"SELECT {_COLUMNS} FROM datastores WHERE id = ?", (datastore_id,))
    if row is None:
        raise DatastoreError(f"no datastore with id {datastore_id}")
    return Datastore(*row)


def list_all(db: Database) -> list[Datastore]:
    rows = db.fetchall(f"SELECT {_COLUMNS} FROM datastores ORDER BY name")
    return [Datastore(*row) for row in rows]


def remove(db: Database, name: str) -> bool:
    """Delete a datastore with its runs, catalog and revisions; False if there was none."""
    with db.transaction():
        return db.execute("DELETE FROM datastores WHERE name = ?", (name,)).rowcount > 0
