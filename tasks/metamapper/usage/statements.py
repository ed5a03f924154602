"""PostgreSQL's query statistics (``pg_stat_statements``) as a query history.

The extension keeps, per database, user and statement (constants replaced by ``$1``,
...), how many times it ran since the statistics were last reset. It has no dates, so
each collection takes a reading and counts the calls since the previous one (the
*baseline*, kept in the metastore) as run on the day of the collection. A reset of the
statistics, or a statement evicted and seen again with fewer calls, starts its count
from zero.

Needs ``shared_preload_libraries = 'pg_stat_statements'`` on the server and
``CREATE EXTENSION pg_stat_statements`` in the datastore's database (PostgreSQL 14 or
later). Other users' statements show only to superusers and members of
``pg_read_all_stats``; to others their text and id are hidden, and hidden statements
are left out of the baseline, so that their calls count once they show. The collector's own
statements carry :data:`MARK` (which also tells a DBA what they are) and never count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

import psycopg
from psycopg import errors, sql

from metamapper.usage.counting import QueryRecord

#: Starts every statement the collector sends (pg_stat_statements keeps comments).
MARK = "/* metamapper usage */"

_CONTEXT = f"""{MARK}
SELECT current_database(), COALESCE(current_schema(), 'public'),
       (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_stat_statements')
"""

_RESET = sql.SQL(MARK + " SELECT stats_reset FROM {schema}.pg_stat_statements_info")

# Top-level statements of this database (with pg_stat_statements.track = all, also the
# statements that functions run, counted with those functions' callers).
_STATEMENTS = sql.SQL(MARK + """
SELECT s.queryid, COALESCE(r.rolname, s.userid::text), s.query, s.calls
  FROM {schema}.pg_stat_statements s
  LEFT JOIN pg_roles r ON r.oid = s.userid
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND s.toplevel
""")


_PRELOAD = "the server needs shared_preload_libraries = 'pg_stat_statements'"


class StatisticsUnavailable(Exception):
    """The datastore's database has no pg_stat_statements to read."""


@dataclass(frozen=True, order=True)
class StatementKey:
    db_user: str
    queryid: int


@dataclass(frozen=True)
class Statement:
    key: StatementKey
    query_text: str
    calls: int


@dataclass(frozen=True)
class Reading:
    """The statistics of one database at one moment."""

    database: str
    schema: str  # where bare names resolve (the collector's current schema)
    stats_reset: datetime | None
    statements: tuple[Statement, ...]
    hidden: int = 0  # statements of other users the reader may not see

    def baseline(self) -> Baseline:
        return Baseline(self.stats_reset, {s.key: s.calls for s in self.statements})


@dataclass(frozen=True)
class Baseline:
    """The calls of each statement at the previous reading (none before the first)."""

    stats_reset: datetime | None
    calls: Mapping[StatementKey, int]


def read(conn: psycopg.Connection) -> Reading:
    """Read the statistics of ``conn``'s database."""
    row = conn.execute(_CONTEXT.encode()).fetchone()
    assert row is not None
    database, schema, extension_schema = row
    if extension_schema is None:
        raise StatisticsUnavailable(
            f"database {database!r} has no pg_stat_statements: run CREATE EXTENSION"
            f" pg_stat_statements in it ({_PRELOAD})"
        )
    where = sql.Identifier(extension_schema)
    try:
        reset_row = conn.execute(_RESET.format(schema=where)).fetchone()
        rows = conn.execute(_STATEMENTS.format(schema=where)).fetchall()
    except errors.ObjectNotInPrerequisiteState:
        raise StatisticsUnavailable(f"the server of {database!r} does not load"
                                    f" pg_stat_statements ({_PRELOAD})") from None
    return Reading(
        database=database,
        schema=schema,
        stats_reset=reset_row[0] if reset_row else None,
        statements=tuple(
            Statement(StatementKey(user, queryid), query, calls)
            for queryid, user, query, calls in rows if queryid is not None
        ),
        hidden=sum(1 for row in rows if row[0] is None),
    )


def calls_since(baseline: Baseline, reading: Reading, day: date) -> list[QueryRecord]:
    """The statements run since ``baseline``, as query records of ``day``."""
    previous = baseline.calls if baseline.stats_reset == reading.stats_reset else {}
    records = []
    for statement in reading.statements:
        if statement.query_text.startswith(MARK):
            continue
        before = previous.get(statement.key, 0)
        # Fewer calls than before: the entry was evicted and made anew since.
        calls = statement.calls - before if statement.calls >= before else statement.calls
        if calls:
            records.append(QueryRecord(
                execution_date=day, db_name=reading.database, db_user=statement.key.db_user,
                db_schema=reading.schema, query_text=statement.query_text, query_count=calls,
            ))
    return records
