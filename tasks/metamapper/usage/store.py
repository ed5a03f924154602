"""Usage in Metamapper's metastore: ``definitions_table_usage`` (query counts per table,
user and day), ``definitions_table_usage_exists`` (queries already counted),
``definitions_table``'s ``usage_*`` columns, ``definitions_datastore.usage_last_synced_at``.

One table is the worker's own, unknown to the web app and created on first use:
``worker_usage_baseline``, the pg_stat_statements calls of each statement at a
datastore's last collection (:mod:`metamapper.usage.statements`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg

from metamapper.usage.counting import UsageKey
from metamapper.usage.scoring import TableScore, TableTotals
from metamapper.usage.statements import Baseline, StatementKey

#: Usage rows and "already counted" marks older than this are deleted.
RETENTION = timedelta(days=90)

#: A datastore's usage is collected again when its last collection is this old.
SYNC_INTERVAL = timedelta(hours=4)

#: Any constants: with the datastore id, the lock that serialises its collections; the
#: lock that serialises creating the baseline table.
_LOCK_CLASS = 7_216_025
_CREATE_LOCK = (7_216_026, 0)

_UPSERT = """
INSERT INTO definitions_table_usage AS t
       (datastore_id, execution_date, db_schema, db_table, db_user, query_count)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (execution_date, datastore_id, db_schema, db_table, db_user)
DO UPDATE SET query_count = t.query_count + EXCLUDED.query_count
"""

_TOTALS = """
SELECT db_schema, db_table, SUM(query_count), COUNT(DISTINCT db_user), MIN(execution_date)
  FROM definitions_table_usage
 WHERE datastore_id = %s
 GROUP BY db_schema, db_table
"""

# Soft-deleted schemas and tables included, as the web app's own update does.
_SCORE = """
UPDATE definitions_table t
   SET usage_score = %s, usage_total_queries = %s, usage_total_users = %s, usage_window = %s
  FROM definitions_schema s
 WHERE s.datastore_id = %s AND s.name = %s AND t.schema_id = s.object_id AND t.name = %s
"""

_DUE = """
UPDATE definitions_datastore d
   SET usage_last_synced_at = now()
 WHERE d.engine = ANY(%s) AND d.is_enabled AND d.deleted_at IS NULL
   AND (d.usage_last_synced_at IS NULL OR d.usage_last_synced_at <= now() - %s)
RETURNING d.id, (SELECT MAX(u.execution_date) FROM definitions_table_usage u
                  WHERE u.datastore_id = d.id)
"""

_BASELINE_TABLE = """
CREATE TABLE IF NOT EXISTS worker_usage_baseline (
    datastore_id varchar(40) NOT NULL
        REFERENCES definitions_datastore (id) ON DELETE CASCADE,
    db_user text NOT NULL,
    queryid bigint NOT NULL,
    calls bigint NOT NULL,
    stats_reset timestamptz,
    PRIMARY KEY (datastore_id, db_user, queryid)
)
"""


@dataclass(frozen=True)
class DueDatastore:
    id: str
    #: The day of the latest usage recorded for it, if any.
    latest_usage: date | None


def engine_of(conn: psycopg.Connection, datastore_id: str) -> str | None:
    """The datastore's engine; None if there is no such datastore."""
    row = conn.execute("SELECT engine FROM definitions_datastore WHERE id = %s",
                       (datastore_id,)).fetchone()
    return None if row is None else str(row[0])


def lock_datastore(conn: psycopg.Connection, datastore_id: str) -> None:
    """Wait for other collections of this datastore (until the transaction ends)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, datastore_id))


def claim(conn: psycopg.Connection, idempotency_id: str) -> bool:
    """Mark a query as counted; False if it already was."""
    cursor = conn.execute(
        "INSERT INTO definitions_table_usage_exists (id, created_at) VALUES (%s, now())"
        " ON CONFLICT (id) DO NOTHING",
        (idempotency_id,),
    )
    return cursor.rowcount == 1


def add_counts(conn: psycopg.Connection, datastore_id: str, counts: Mapping[UsageKey, int]) -> None:
    """Add query counts to the datastore's usage rows (in key order, so concurrent
    writers lock rows in the same order)."""
    with conn.cursor() as cursor:
        cursor.executemany(_UPSERT, [
            (datastore_id, key.execution_date, key.db_schema, key.db_table, key.db_user, count)
            for key, count in sorted(counts.items())
        ])


def table_totals(conn: psycopg.Connection, datastore_id: str) -> list[TableTotals]:
    return [TableTotals(*row) for row in conn.execute(_TOTALS, (datastore_id,)).fetchall()]


def write_scores(conn: psycopg.Connection, datastore_id: str, scores: Sequence[TableScore]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(_SCORE, [
            (s.usage_score, s.usage_total_queries, s.usage_total_users, s.usage_window,
             datastore_id, s.db_schema, s.db_table)
            for s in scores
        ])


@dataclass(frozen=True)
class Purged:
    usage_rows: int
    counted_marks: int


def purge_old_usage(conn: psycopg.Connection) -> Purged:
    """Delete usage rows and "already counted" marks older than :data:`RETENTION`."""
    with conn.transaction():
        usage = conn.execute(
            "DELETE FROM definitions_table_usage"
            " WHERE execution_date::timestamp < now() - %s", (RETENTION,),
        ).rowcount
        marks = conn.execute(
            "DELETE FROM definitions_table_usage_exists WHERE created_at < now() - %s",
            (RETENTION,),
        ).rowcount
    return Purged(usage, marks)


def take_due(conn: psycopg.Connection, engines: Sequence[str]) -> list[DueDatastore]:
    """The enabled datastores of ``engines`` not collected for :data:`SYNC_INTERVAL`,
    marked as collected now (in the caller's transaction)."""
    rows = conn.execute(_DUE, (list(engines), SYNC_INTERVAL)).fetchall()
    return [DueDatastore(*row) for row in rows]


def baseline(conn: psycopg.Connection, datastore_id: str) -> Baseline:
    """The datastore's baseline (call within a transaction: the table may be created)."""
    exists = conn.execute("SELECT to_regclass('worker_usage_baseline')").fetchone()
    if exists is None or exists[0] is None:
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _CREATE_LOCK)
        conn.execute(_BASELINE_TABLE)
    rows = conn.execute(
        "SELECT db_user, queryid, calls, stats_reset FROM worker_usage_baseline"
        " WHERE datastore_id = %s", (datastore_id,),
    ).fetchall()
    return Baseline(
        stats_reset=rows[0][3] if rows else None,
        calls={StatementKey(user, queryid): calls for user, queryid, calls, _ in rows},
    )


def save_baseline(conn: psycopg.Connection, datastore_id: str, new: Baseline) -> None:
    """Replace the datastore's baseline."""
    conn.execute("DELETE FROM worker_usage_baseline WHERE datastore_id = %s", (datastore_id,))
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO worker_usage_baseline"
            " (datastore_id, db_user, queryid, calls, stats_reset) VALUES (%s, %s, %s, %s, %s)",
            [(datastore_id, key.db_user, key.queryid, calls, new.stats_reset)
             for key, calls in new.calls.items()],
        )
