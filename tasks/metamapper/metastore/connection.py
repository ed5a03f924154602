"""The connection to Metamapper's metastore: its PostgreSQL database, named the way the
web app names it (``METAMAPPER_DB_HOST``, ``_PORT``, ``_NAME``, ``_USER``, ``_PASSWORD``,
with the web app's defaults). None of them set is no metastore at all
(:mod:`metamapper.metastore_env`): :class:`MetastoreNotConfigured`.

:func:`open_metastore` gives a psycopg connection in autocommit mode; a caller groups
writes with ``conn.transaction()``. The password never appears in what this module
shows or raises.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import conninfo_to_dict

from metamapper import metastore_env
from metamapper_beat import METASTORE_ENV
from metamapper_urls import scrub

CONNECT_TIMEOUT = 10


class MetastoreUnavailable(Exception):
    """The metastore cannot be reached or refused us; the message holds no password."""


class MetastoreNotConfigured(MetastoreUnavailable):
    """None of METAMAPPER_DB_* is set: there is no metastore to wait for or retry."""


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
        if not metastore_env.configured(env):
            raise MetastoreNotConfigured(metastore_env.NOT_CONFIGURED)
        value = {key: env.get(key, default) for key, default in METASTORE_ENV.items()}
        port = value["METAMAPPER_DB_PORT"]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise MetastoreUnavailable(f"METAMAPPER_DB_PORT is not a port number: {port!r}")
        return cls(
            host=value["METAMAPPER_DB_HOST"], port=int(port), name=value["METAMAPPER_DB_NAME"],
            user=value["METAMAPPER_DB_USER"], password=value["METAMAPPER_DB_PASSWORD"],
        )

    @classmethod
    def from_dsn(cls, dsn: str) -> MetastoreSettings:
        """The settings of a libpq connection string or URL (``postgresql://...``)."""
        info = conninfo_to_dict(dsn)
        return cls(
            host=str(info.get("host") or "localhost"), port=int(info.get("port") or 5432),
            name=str(info.get("dbname") or ""), user=str(info.get("user") or ""),
            password=str(info.get("password") or ""),
        )

    def environment(self) -> dict[str, str]:
        """METAMAPPER_DB_* naming these settings, for another process or a pod."""
        return {
            "METAMAPPER_DB_HOST": self.host, "METAMAPPER_DB_PORT": str(self.port),
            "METAMAPPER_DB_NAME": self.name, "METAMAPPER_DB_USER": self.user,
            "METAMAPPER_DB_PASSWORD": self.password,
        }

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
