"""A check's SQL on its datastore: PostgreSQL (psycopg) or MySQL/MariaDB (PyMySQL).

The query runs in a read-only transaction on PostgreSQL and with the statement timeout
below on both, and its whole result is read, as upstream reads it into a DataFrame. An
error of the datastore, its driver or the connection is a :class:`QueryError` whose
message is the driver's, with every credential of the URL masked: it becomes the
execution's ``error``, which the web app shows.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pymysql

from metamapper.checks.frame import Frame
from metamapper.inspectors.mysql import connect_args
from metamapper.urls import engine_of
from metamapper_urls import parse_url, scrub, secrets_in

STATEMENT_TIMEOUT_SECONDS = 10 * 60


class QueryError(Exception):
    """The query did not run; the message is the datastore's, without credentials."""


def run_query(url: str, sql: str) -> Frame:
    """The result of ``sql`` on the datastore at ``url``."""
    try:
        engine = engine_of(url)
    except ValueError as exc:
        raise QueryError(str(exc)) from None
    try:
        if engine == "postgresql":
            return _postgresql(url, sql)
        if engine == "mysql":
            return _mysql(url, sql)
    except (psycopg.Error, pymysql.err.Error) as exc:
        raise QueryError(_message(exc, url)) from None
    raise QueryError(f"checks do not run on {engine} datastores")


def _message(exc: Exception, url: str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return scrub(text, secrets_in(url))


def _postgresql(url: str, sql: str) -> Frame:
    options = f"-c statement_timeout={STATEMENT_TIMEOUT_SECONDS * 1000}"
    with psycopg.connect(url, connect_timeout=10, options=options) as conn:
        conn.read_only = True
        with conn.cursor() as cursor:
            cursor.execute(sql.encode())
            return _frame(cursor.description, cursor.fetchall() if cursor.description else [])


def _mysql(url: str, sql: str) -> Frame:
    database = parse_url(url).path.lstrip("/") or None
    conn = pymysql.connect(**connect_args(url), database=database,
                           read_timeout=STATEMENT_TIMEOUT_SECONDS)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return _frame(cursor.description, cursor.fetchall() if cursor.description else [])
    finally:
        conn.close()


def _frame(description: Any, rows: Any) -> Frame:
    columns = [column[0] for column in description or ()]
    return Frame.of(columns, rows)
