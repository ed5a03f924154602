"""Datastores: the databases Metamapper inspects, as the web app registers them in
``definitions_datastore`` (the password encrypted, see :mod:`metamapper.metastore.fernet`).

:func:`load` reads one with its connection settings decrypted and the incident contacts
its failure alert goes to; :func:`register` writes one the way the web app does, for an
installation without the web app, the demo and the tests.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from metamapper.metastore.fernet import Cipher
from metamapper.urls import ENGINES as URL_ENGINES
from metamapper_urls import parse_url, redact

#: Metamapper's engines (``definitions_datastore.engine``).
ENGINES = ("postgresql", "sqlserver", "mysql", "redshift", "snowflake", "oracle", "bigquery",
           "athena", "glue", "azure_sql", "azure_dwh", "hive")
#: Engines whose datastores this worker reaches through a URL, by the URL's scheme.
URL_SCHEMES = {"postgresql": "postgresql", "redshift": "postgresql", "mysql": "mysql"}
#: A URL's scheme -> the engine it means, and the engine's usual port.
_SCHEME_ENGINES = {**URL_ENGINES, "redshift": "redshift"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "redshift": 5439}


class DatastoreError(Exception):
    """A datastore is missing, duplicated or misconfigured."""


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach a datastore: ``definitions_datastore``'s columns, the password decrypted."""

    engine: str
    host: str
    port: int
    database: str
    username: str
    password: str = field(repr=False)
    #: Engine-specific settings (e.g. an AWS region), as the web app stores them.
    extras: Mapping[str, Any] = field(default_factory=dict)

    def url(self) -> str:
        """A connection URL for the engines reached through one (PostgreSQL, Redshift,
        MySQL); :class:`DatastoreError` for the others."""
        scheme = URL_SCHEMES.get(self.engine)
        if scheme is None:
            raise DatastoreError(f"a {self.engine} datastore has no connection URL")
        password = f":{quote(self.password, safe='')}" if self.password else ""
        user = f"{quote(self.username, safe='')}{password}@"
        return f"{scheme}://{user}{self.host}:{self.port}/{quote(self.database, safe='')}"


@dataclass(frozen=True)
class RegisteredDatastore:
    """A datastore as Metamapper's web app registered it."""

    id: str
    workspace_id: str
    workspace_slug: str
    name: str
    slug: str
    is_enabled: bool
    version: str | None
    interval: timedelta
    connection: ConnectionSettings
    #: E-mail addresses told when a run of this datastore fails.
    incident_contacts: tuple[str, ...]
    disabled_datastore_properties: tuple[str, ...]
    disabled_table_properties: tuple[str, ...]
    deleted_at: datetime | None


def settings_from_url(url: str, engine: str | None = None) -> ConnectionSettings:
    """The settings a URL such as ``postgresql://user:pass@host:5432/db`` gives; ``engine``
    names one the scheme does not (e.g. ``hive`` for its backing database's URL)."""
    parsed = parse_url(url)
    engine = engine or _SCHEME_ENGINES.get(parsed.scheme.split("+")[0].lower())
    if engine is None:
        raise DatastoreError(f"no engine for the scheme of {redact(url)!r}: give one")
    if not parsed.host:
        raise DatastoreError(f"{redact(url)!r} names no host")
    return ConnectionSettings(
        engine=engine, host=parsed.host, port=parsed.port or _DEFAULT_PORTS.get(engine, 0),
        database=parsed.path, username=parsed.username or "", password=parsed.password or "",
        extras=dict(parsed.query),
    )


@dataclass(frozen=True)
class DatastoreSummary:
    """A registered datastore as a listing shows it (no credentials)."""

    id: str
    workspace_slug: str
    name: str
    engine: str
    address: str  # host:port/database
    is_enabled: bool


def list_registered(conn: psycopg.Connection) -> list[DatastoreSummary]:
    """The datastores not deleted, by workspace and name."""
    rows = conn.execute(
        "SELECT d.id, w.slug, d.name, d.engine, d.host || ':' || d.port || '/' || d.database,"
        " d.is_enabled FROM definitions_datastore d"
        " JOIN auth_workspaces w ON w.id = d.workspace_id"
        " WHERE d.deleted_at IS NULL ORDER BY w.slug, d.name"
    ).fetchall()
    return [DatastoreSummary(*row) for row in rows]


_LOAD = """
    SELECT d.id, d.workspace_id, w.slug AS workspace_slug, d.name, d.slug, d.is_enabled,
           d.version, d.interval,
           d.engine, d.host, d.port, d.database, d.username, d.password, d.extras,
           d.incident_contacts, d.disabled_datastore_properties, d.disabled_table_properties,
           d.deleted_at
      FROM definitions_datastore d JOIN auth_workspaces w ON w.id = d.workspace_id
     WHERE d.id = %s
"""


def load(
    conn: psycopg.Connection, datastore_id: str, cipher: Cipher | None = None,
    *, include_deleted: bool = False,
) -> RegisteredDatastore:
    """The datastore ``datastore_id`` with its password decrypted (by ``cipher``, else
    METAMAPPER_FERNET_KEY's); a soft-deleted one counts as missing unless asked for."""
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(_LOAD, (datastore_id,)).fetchone()
    if row is None or (row["deleted_at"] is not None and not include_deleted):
        raise DatastoreError(f"no datastore with id {datastore_id!r}")
    password = (cipher or Cipher.from_env()).decrypt(
        row["password"], f"the password of datastore {row['name']!r} ({row['id']})"
    )
    return RegisteredDatastore(
        id=row["id"], workspace_id=row["workspace_id"], workspace_slug=row["workspace_slug"],
        name=row["name"], slug=row["slug"], is_enabled=row["is_enabled"],
        version=row["version"], interval=row["interval"],
        connection=ConnectionSettings(row["engine"], row["host"], row["port"], row["database"],
                                      row["username"], password, row["extras"]),
        incident_contacts=tuple(row["incident_contacts"]),
        disabled_datastore_properties=tuple(row["disabled_datastore_properties"]),
        disabled_table_properties=tuple(row["disabled_table_properties"]),
        deleted_at=row["deleted_at"],
    )

def set_version(conn: psycopg.Connection, datastore_id: str, version: str) -> bool:
    """Record the engine's version, as the web app's version check does; False if it
    was already current."""
    cursor = conn.execute(
        "UPDATE definitions_datastore SET version = %s, updated_at = now()"
        " WHERE id = %s AND version IS DISTINCT FROM %s",
        (version, datastore_id, version),
    )
    return cursor.rowcount > 0


def new_id() -> str:
    """A primary key the way the web app makes one: 12 random letters and digits."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


def register(
    conn: psycopg.Connection,
    workspace_id: str,
    name: str,
    connection: ConnectionSettings,
    *,
    cipher: Cipher | None = None,
    interval: timedelta = timedelta(days=1),
    incident_contacts: Sequence[str] = (),
    is_enabled: bool = True,
) -> str:
    """Insert a datastore as the web app would (its defaults, an encrypted password, a
    unique slug); returns its id. Names are unique within a workspace."""
    token = (cipher or Cipher.from_env()).encrypt(connection.password)
    datastore_id = new_id()
    with conn.transaction():
        if conn.execute(
            "SELECT 1 FROM definitions_datastore WHERE workspace_id = %s AND name = %s",
            (workspace_id, name),
        ).fetchone():
            raise DatastoreError(f"the workspace already has a datastore named {name!r}")
        slug = _unique_slug(conn, name)
        conn.execute(
            """INSERT INTO definitions_datastore (
                   id, created_at, updated_at, custom_properties, name, slug, tags, is_enabled,
                   engine, host, username, password, database, port, extras, ssh_enabled,
                   disabled_datastore_properties, disabled_table_properties,
                   object_permissions_enabled, workspace_id, incident_contacts, interval)
               VALUES (%s, now(), now(), '{}', %s, %s, '{}', %s, %s, %s, %s, %s, %s, %s, %s,
                       false, '{}', '{}', true, %s, %s, %s)""",
            (datastore_id, name, slug, is_enabled, connection.engine, connection.host,
             connection.username, token, connection.database, connection.port,
             Jsonb(dict(connection.extras)), workspace_id, list(incident_contacts), interval),
        )
    return datastore_id


def _unique_slug(conn: psycopg.Connection, name: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:280] or "datastore"
    taken = {row[0] for row in conn.execute(
        "SELECT slug FROM definitions_datastore WHERE slug = %s OR slug LIKE %s",
        (base, f"{base}-%"),
    )}
    slug, n = base, 1
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    return slug
