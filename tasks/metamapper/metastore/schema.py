"""Metamapper 1.0's metastore schema, for databases the web app did not create.

Where Metamapper's web app runs, its Django migrations own the schema and the worker
only reads and writes it. ``schema.sql`` (beside this module) lets a test, the demo or an
installation without the web app create the same tables in an empty database.
"""

from __future__ import annotations

from importlib.resources import files

import psycopg

#: Any constant: concurrent ``create`` calls on one database queue on it.
_LOCK_KEY = 7_216_002


def sql() -> str:
    """The schema as one script of SQL statements."""
    return files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")


def tables(conn: psycopg.Connection) -> set[str]:
    """The tables in the connection's current schema search path (``public``)."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    ).fetchall()
    return {row[0] for row in rows}


class SchemaExists(Exception):
    """The database already holds Metamapper's tables (the web app's or an earlier init)."""


def create(conn: psycopg.Connection) -> None:
    """Create every table of ``schema.sql`` in one transaction.

    Refuses a database that already has a ``definitions_datastore`` table: such a
    database belongs to the web app's migrations (or was initialised before), and
    half-applying a schema over it would only hide the difference.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        if "definitions_datastore" in tables(conn):
            raise SchemaExists("the database already has Metamapper's tables")
        conn.execute(sql().encode())
