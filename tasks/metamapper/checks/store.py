"""The ``checks_*`` tables of Metamapper's metastore, as the web app reads them.

An execution is ``PENDING`` until ``finished_at`` is set; then ``FAILURE`` if it has an
``error`` or ``fails_count > 0``, else ``SUCCESS`` (the web app derives this; nothing
stores it). Every function takes a psycopg connection in autocommit mode and the time
``now`` (UTC), so the caller decides the clock; writes that belong together are one
transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

#: Serialises ``create_due_executions`` across workers (any constant of this package).
_CREATE_LOCK = 7_216_101

SUCCESS, FAILURE = "SUCCESS", "FAILURE"


def epoch_of(when: dt.datetime) -> int:
    """Whole Unix seconds, rounded as upstream's ``epoch_now``."""
    return round(when.timestamp())


@dataclass(frozen=True)
class ExecutionKey:
    check_id: str
    epoch: int


def create_due_executions(conn: psycopg.Connection, now: dt.datetime) -> list[ExecutionKey]:
    """One execution, at ``now``'s epoch, for every enabled check whose last execution
    was created at least its interval ago (or that has none); only the new ones are
    returned. Concurrent callers take turns, so no check gets two at once."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
        rows = conn.execute(
            """
            INSERT INTO checks_execution
                (job_id, workspace_id, query_id, epoch, tasks_count, fails_count, created_at)
            SELECT c.id, c.workspace_id, c.query_id, %(epoch)s, 0, 0, %(now)s
            FROM checks c
            LEFT JOIN (SELECT job_id, max(created_at) AS last_run
                       FROM checks_execution GROUP BY job_id) e ON e.job_id = c.id
            WHERE c.is_enabled AND (e.last_run IS NULL OR e.last_run <= %(now)s - c.interval)
            ORDER BY c.id
            ON CONFLICT (job_id, epoch) DO NOTHING
            RETURNING job_id, epoch
            """,
            {"epoch": epoch_of(now), "now": now},
        ).fetchall()
    return [ExecutionKey(check_id, epoch) for check_id, epoch in rows]


@dataclass(frozen=True, kw_only=True)
class Execution:
    """An execution with what running it needs from its check."""

    id: int
    check_id: str
    epoch: int
    interval: dt.timedelta
    datastore_id: str
    sql_text: str
    finished: bool


def execution(conn: psycopg.Connection, check_id: str, epoch: int) -> Execution | None:
    row = conn.execute(
        """
        SELECT e.id, c.interval, c.datastore_id, q.sql_text, e.finished_at IS NOT NULL
        FROM checks_execution e
        JOIN checks c ON c.id = e.job_id
        JOIN checks_query q ON q.id = c.query_id
        WHERE e.job_id = %s AND e.epoch = %s
        """,
        (check_id, epoch),
    ).fetchone()
    if row is None:
        return None
    id_, interval, datastore_id, sql_text, finished = row
    return Execution(id=id_, check_id=check_id, epoch=epoch, interval=interval,
                     datastore_id=datastore_id, sql_text=sql_text, finished=finished)


def mark_started(conn: psycopg.Connection, execution_id: int, now: dt.datetime) -> None:
    conn.execute("UPDATE checks_execution SET started_at = %s WHERE id = %s",
                 (now, execution_id))


@dataclass(frozen=True, kw_only=True)
class Expectation:
    id: int
    handler_class: str
    handler_input: dict[str, Any]
    pass_value_class: str
    pass_value_input: dict[str, Any]


def live_expectations(conn: psycopg.Connection, check_id: str) -> list[Expectation]:
    """The check's expectations not soft-deleted, oldest first."""
    rows = conn.execute(
        """
        SELECT id, handler_class, handler_input, pass_value_class, pass_value_input
        FROM checks_expectation WHERE job_id = %s AND deleted_at IS NULL
        ORDER BY created_at, id
        """,
        (check_id,),
    ).fetchall()
    return [Expectation(id=r[0], handler_class=r[1], handler_input=r[2] or {},
                        pass_value_class=r[3], pass_value_input=r[4] or {}) for r in rows]


_AGGREGATES = {"average": "avg", "maximum": "max", "minimum": "min", "sum": "sum"}


def observed_history(conn: psycopg.Connection, expectation_id: int, aggregator: str,
                     seconds: int, now: dt.datetime) -> Any:
    """The aggregate of the values ``expectation_id`` observed in its results of the last
    ``seconds`` (None without any): a rollup's pass value. Averages are floats, the
    others integers, as upstream's aggregates come back."""
    query = sql.SQL(
        "SELECT {}(observed_value) FROM checks_expectationresult"
        " WHERE expectation_id = %s AND epoch >= %s"
    ).format(sql.SQL(_AGGREGATES[aggregator]))
    row = conn.execute(query, (expectation_id, epoch_of(now) - seconds)).fetchone()
    value = row[0] if row else None
    if value is None:
        return None
    return float(value) if aggregator == "average" else int(value)


@dataclass(frozen=True, kw_only=True)
class Result:
    expectation_id: int
    passed: bool
    expected_value: int | None
    observed_value: int | None


def finish(conn: psycopg.Connection, execution: Execution, results: Sequence[Result], *,
           tasks_count: int, fails_count: int, error: str | None, now: dt.datetime) -> bool:
    """Store the results and close the execution; the check's ``last_execution`` is it.

    False, with nothing written, when the execution was closed meanwhile (a second run of
    one message): its results are stored once."""
    with conn.transaction():
        row = conn.execute("SELECT finished_at FROM checks_execution WHERE id = %s FOR UPDATE",
                           (execution.id,)).fetchone()
        if row is None or row[0] is not None:
            return False
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO checks_expectationresult"
                " (epoch, passed, expected_value, observed_value, execution_id, expectation_id)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                [(epoch_of(now), r.passed, r.expected_value, r.observed_value, execution.id,
                  r.expectation_id) for r in results],
            )
        conn.execute(
            "UPDATE checks_execution SET error = %s, fails_count = %s, tasks_count = %s,"
            " finished_at = %s WHERE id = %s",
            (error, fails_count, tasks_count, now, execution.id),
        )
        conn.execute("UPDATE checks SET last_execution_id = %s, updated_at = %s WHERE id = %s",
                     (execution.id, now, execution.check_id))
    return True


def disable(conn: psycopg.Connection, execution: Execution, now: dt.datetime) -> None:
    """A check with no expectation left: disabled, and its execution removed."""
    with conn.transaction():
        conn.execute("UPDATE checks SET is_enabled = false, updated_at = %s WHERE id = %s",
                     (now, execution.check_id))
        conn.execute("DELETE FROM checks_execution WHERE id = %s", (execution.id,))


@dataclass(frozen=True, kw_only=True)
class Finished:
    """A finished execution, as ``dispatch_alerts`` judges it."""

    execution_id: int
    error: str | None
    results: int
    failed: int

    @property
    def status(self) -> str:
        return FAILURE if self.error is not None or self.failed else SUCCESS


def finished(conn: psycopg.Connection, check_id: str, epoch: int) -> Finished | None:
    row = conn.execute(
        """
        SELECT e.id, e.error, count(r.id), count(r.id) FILTER (WHERE NOT r.passed)
        FROM checks_execution e LEFT JOIN checks_expectationresult r ON r.execution_id = e.id
        WHERE e.job_id = %s AND e.epoch = %s AND e.finished_at IS NOT NULL
        GROUP BY e.id, e.error
        """,
        (check_id, epoch),
    ).fetchone()
    if row is None:
        return None
    return Finished(execution_id=row[0], error=row[1], results=row[2], failed=row[3])


@dataclass(frozen=True, kw_only=True)
class AlertRule:
    id: int
    name: str
    channel: str
    channel_config: dict[str, Any]


def due_alert_rules(conn: psycopg.Connection, check_id: str,
                    now: dt.datetime) -> list[AlertRule]:
    """The check's rules that have not alerted, or whose last alerted failure was created
    at least the rule's interval ago."""
    rows = conn.execute(
        """
        SELECT r.id, r.name, r.channel, r.channel_config
        FROM checks_alertrule r LEFT JOIN checks_execution f ON f.id = r.last_failure_id
        WHERE r.job_id = %s AND (r.last_failure_id IS NULL OR f.created_at <= %s - r.interval)
        ORDER BY r.id
        """,
        (check_id, now),
    ).fetchall()
    return [AlertRule(id=r[0], name=r[1], channel=r[2], channel_config=r[3] or {})
            for r in rows]


def set_last_failure(conn: psycopg.Connection, rule_id: int, execution_id: int) -> None:
    conn.execute("UPDATE checks_alertrule SET last_failure_id = %s WHERE id = %s",
                 (execution_id, rule_id))


@dataclass(frozen=True, kw_only=True)
class Subject:
    """What an alert names: the check, its datastore and its workspace."""

    check_id: str
    check_name: str
    check_created_at: dt.datetime
    datastore_name: str
    datastore_slug: str
    workspace_id: str
    workspace_name: str
    workspace_slug: str


def subject(conn: psycopg.Connection, check_id: str) -> Subject:
    row = conn.execute(
        """
        SELECT c.name, c.created_at, d.name, d.slug, w.id, w.name, w.slug
        FROM checks c JOIN definitions_datastore d ON d.id = c.datastore_id
        JOIN auth_workspaces w ON w.id = c.workspace_id WHERE c.id = %s
        """,
        (check_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"check {check_id!r} does not exist")
    return Subject(check_id=check_id, check_name=row[0], check_created_at=row[1],
                   datastore_name=row[2], datastore_slug=row[3], workspace_id=row[4],
                   workspace_name=row[5], workspace_slug=row[6])


@dataclass(frozen=True, kw_only=True)
class Integration:
    """A workspace's Slack or PagerDuty integration; ``auth`` is still encrypted."""

    id: str
    auth: bytes
    meta: dict[str, Any]


def integration(conn: psycopg.Connection, workspace_id: str, integration_id: str,
                kind: str) -> Integration | None:
    row = conn.execute(
        "SELECT auth, meta FROM integration_config"
        " WHERE id = %s AND workspace_id = %s AND integration = %s",
        (integration_id, workspace_id, kind),
    ).fetchone()
    if row is None:
        return None
    return Integration(id=integration_id, auth=bytes(row[0]), meta=row[1] or {})

