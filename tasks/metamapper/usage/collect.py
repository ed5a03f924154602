"""The steps of usage collection, independent of Celery (the tasks call them).

Whatever a query history comes from, its records go the same way:
:func:`record_usage` counts the tables they read into ``definitions_table_usage``,
:func:`update_metrics` turns the datastore's usage into the scores of its tables.
This image reads one history, PostgreSQL's (:func:`collect_postgresql`); Metamapper's
own, Snowflake's, needs Snowflake, which cannot be reached here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from metamapper.inspectors import DatastoreUnavailable
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.usage import statements, store
from metamapper.usage.counting import QueryRecord, table_counts
from metamapper.usage.parsing import Dialect
from metamapper.usage.scoring import score_tables
from metamapper_urls import scrub

logger = logging.getLogger(__name__)

#: How the query texts of each engine's datastores are read.
DIALECTS = {"postgresql": Dialect.POSTGRESQL, "snowflake": Dialect.SNOWFLAKE}

#: A first collection looks back this far (Metamapper's ``USAGE_WINDOW``).
USAGE_WINDOW = timedelta(days=30)

CONNECT_TIMEOUT = 10


class NoQueryHistory(Exception):
    """This image cannot read the query history of a datastore's engine."""


def today() -> date:
    return datetime.now(UTC).date()


def sync_start(latest_usage: date | None, day: date) -> date:
    """Where a collection's window starts: the latest day with usage, unless there is
    none or it is more than :data:`USAGE_WINDOW` ago (then that far back)."""
    earliest = day - USAGE_WINDOW
    if latest_usage is None or latest_usage <= earliest:
        return earliest
    return latest_usage


def dialect_of(engine: str) -> Dialect:
    try:
        return DIALECTS[engine]
    except KeyError:
        raise NoQueryHistory(f"queries of a {engine} datastore cannot be read here") from None


def record_usage(conn: psycopg.Connection, datastore_id: str, records: Iterable[QueryRecord],
                 dialect: Dialect) -> int:
    """Count the tables ``records`` read into the datastore's usage; the number of
    usage rows added to."""
    counts = table_counts(records, dialect)
    store.add_counts(conn, datastore_id, counts)
    return len(counts)


def update_metrics(conn: psycopg.Connection, datastore_id: str, day: date) -> int:
    """Score the datastore's tables from its usage; the number of tables scored."""
    scores = score_tables(store.table_totals(conn, datastore_id), day)
    store.write_scores(conn, datastore_id, scores)
    return len(scores)


@dataclass(frozen=True)
class Collection:
    statements: int  # statements newly run since the last collection
    usage_rows: int
    tables_scored: int
    hidden: int  # statements whose text the datastore's user may not read


def collect_postgresql(conn: psycopg.Connection, datastore_id: str,
                       settings: ConnectionSettings, day: date) -> Collection:
    """Count what ran on the datastore since its last collection as run on ``day``,
    and score its tables: one metastore transaction, so a failure changes nothing and
    the calls stay counted by the datastore for the next collection."""
    with conn.transaction():
        store.lock_datastore(conn, datastore_id)
        baseline = store.baseline(conn, datastore_id)
        reading = _read_statistics(settings)
        records = statements.calls_since(baseline, reading, day)
        rows = record_usage(conn, datastore_id, records, Dialect.POSTGRESQL)
        store.save_baseline(conn, datastore_id, reading.baseline())
        scored = update_metrics(conn, datastore_id, day)
    return Collection(len(records), rows, scored, reading.hidden)


def _read_statistics(settings: ConnectionSettings) -> statements.Reading:
    try:
        datastore = psycopg.connect(
            host=settings.host, port=settings.port, dbname=settings.database,
            user=settings.username, password=settings.password, autocommit=True,
            connect_timeout=CONNECT_TIMEOUT, application_name="metamapper-usage",
        )
    except psycopg.Error as exc:
        where = f"{settings.username}@{settings.host}:{settings.port}/{settings.database}"
        raise DatastoreUnavailable(scrub(f"{where}: {str(exc).strip()}",
                                         [settings.password])) from None
    with datastore:
        return statements.read(datastore)
