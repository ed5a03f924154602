"""Data-quality checks: upstream's expectations and pass values as tables, then checks
on a real PostgreSQL and MariaDB datastore registered in Metamapper's metastore, their
rows read as the web app reads them, and their alerts received by a real SMTP server and
a local HTTP endpoint (Slack's and PagerDuty's request shapes)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from devenv.waiting import wait_until
from metamapper.celery import app
from metamapper.checks import alerts, define, execution, store
from metamapper.checks.context import CheckContext
from metamapper.checks.define import ExpectationSpec
from metamapper.checks.expectations import ExpectationError, as_bigint, evaluate
from metamapper.checks.frame import Frame
from metamapper.checks.pass_values import CONSTANT, ROLLUP, expected_value
from metamapper.checks.tasks import create_executions
from metamapper.metastore import datastores, workspaces
from metamapper.metastore.fernet import Cipher
from metamapper.notify import MailSettings
from metamapper.notify.mail import SMTP_BACKEND
from metamapper.urls import engine_of
from metamapper_urls import parse_url
from tests.tasks.conftest import MetamapperDB, Process
from tests.tasks.receivers import HttpReceiver, SmtpServer, http_receiver, smtp_server
from tests.tasks.test_protocol import web_app

__all__ = ["http_receiver", "smtp_server"]

E = "app.checks.tasks.expectations."
ROW_COUNT = E + "AssertRowCountToBe"
FIRST = E + "AssertFirstValueOfColumnToBe"
AVG = E + "AssertAvgValueOfColumnToBe"
MAX = E + "AssertMaxValueOfColumnToBe"
MIN = E + "AssertMinValueOfColumnToBe"
DUPLICATES = E + "AssertCountOfDuplicateValuesOfColumnToBe"

FRAME = Frame.of(["id", "customer", "amount"], [
    (1, "ann", Decimal("10.50")), (2, "bob", None), (3, "ann", Decimal("4.50")),
    (4, "cy", Decimal("3.00")),
])


# --- the expectations, as tables --------------------------------------------------------

@pytest.mark.parametrize(("handler", "inputs", "expected", "observed", "passed"), [
    (ROW_COUNT, {"op": "equal to"}, 4, 4, True),
    (ROW_COUNT, {"op": "greater than"}, 4, 4, False),
    (FIRST, {"column": "customer", "op": "equal to"}, "ann", "ann", True),
    (AVG, {"column": "amount", "op": "equal to", "skipna": True}, 6, Decimal(6), True),
    (MAX, {"column": "amount", "op": "less than", "skipna": True}, 11, Decimal("10.50"), True),
    (MIN, {"column": "amount", "op": "greater than or equal to", "skipna": True}, 3,
     Decimal("3.00"), True),
    (MIN, {"column": "id", "op": "not equal to", "skipna": True}, 1, 1, False),
    (DUPLICATES, {"columns": ["customer"], "op": "equal to", "skipna": True}, 1, 1, True),
    (DUPLICATES, {"columns": ["customer", "id"], "op": "equal to", "skipna": True}, 0, 0,
     True),
    # A missing column or no rows is observed as nothing, which fails any comparison...
    (AVG, {"column": "nope", "op": "not equal to", "skipna": True}, 1, None, False),
    (DUPLICATES, {"columns": ["customer", "nope"], "op": "less than"}, 1, None, False),
    # ... but the row count is compared as it is.
    (ROW_COUNT, {"op": "less than"}, 5, 4, True),
    # No pass value (a rollup without history): the expectation passes.
    (MAX, {"column": "amount", "op": "greater than", "skipna": True}, None, Decimal("10.50"),
     True),
])
def test_each_expectation_kind(handler: str, inputs: dict[str, Any], expected: Any,
                               observed: Any, passed: bool) -> None:
    outcome = evaluate(handler, inputs, FRAME, expected)
    assert (outcome.observed, outcome.passed) == (observed, passed)


def test_skipna_false_makes_a_null_nan_which_only_differs() -> None:
    inputs = {"column": "amount", "skipna": False}
    for op, passed in [("equal to", False), ("greater than", False), ("not equal to", True)]:
        outcome = evaluate(AVG, {**inputs, "op": op}, FRAME, 6)
        assert math.isnan(outcome.observed)
        assert outcome.passed is passed
    assert as_bigint(math.nan) is None


def test_an_empty_result_observes_nothing_but_counts_zero_rows() -> None:
    empty = Frame.of(["amount"], [])
    assert evaluate(MAX, {"column": "amount", "op": "equal to"}, empty, 0).passed is False
    assert evaluate(ROW_COUNT, {"op": "equal to"}, empty, 0).passed is True


def test_duplicates_count_nulls_only_without_skipna() -> None:
    frame = Frame.of(["a"], [(None,), (None,), (1,), (2,), (2,)])
    assert evaluate(DUPLICATES, {"columns": ["a"], "op": "equal to", "skipna": True},
                    frame, 1).observed == 1
    assert evaluate(DUPLICATES, {"columns": ["a"], "op": "equal to", "skipna": False},
                    frame, 2).observed == 2


@pytest.mark.parametrize(("handler", "inputs", "message"), [
    (AVG, {"column": "customer", "op": "equal to"}, "column 'customer' cannot be compared"),
    (ROW_COUNT, {"op": "about"}, "unknown operation 'about'"),
    (E + "AssertMedianToBe", {"op": "equal to"}, "unknown expectation"),
])
def test_an_expectation_that_cannot_be_evaluated_says_why(
        handler: str, inputs: dict[str, Any], message: str) -> None:
    with pytest.raises(ExpectationError, match=message):
        evaluate(handler, inputs, FRAME, 5)


def test_stored_values_are_truncated_integers_as_upstream_stores_them() -> None:
    assert [as_bigint(v) for v in (Decimal("10.5"), 2.9, True, "ann", None, math.inf)] == [
        10, 2, 1, None, None, None]


def test_pass_values() -> None:
    def history(aggregator: str, seconds: int) -> Any:
        return {"average": 7.5, "sum": 30}[aggregator] if seconds == 3600 else None

    assert expected_value(CONSTANT, {"value": 12}, history) == 12
    assert expected_value(ROLLUP, {"aggregator": "average", "interval": 3600}, history) == 7.5
    assert expected_value(ROLLUP, {"aggregator": "sum", "interval": 60}, history) is None
    with pytest.raises(ExpectationError, match="aggregator 'median'"):
        expected_value(ROLLUP, {"aggregator": "median", "interval": 60}, history)


def test_the_sql_template_sees_upstreams_dates() -> None:
    context = CheckContext(epoch=1765065600, interval=dt.timedelta(hours=6))  # 2025-12-07
    sql = ("{{ ds }} {{ yesterday_ds }} {{ tomorrow_ds }} | {{ execution_date }}"
           " | {{ prev_execution_date }} | {{ next_execution_date }}")
    assert context.render(sql) == (
        "2025-12-07 2025-12-06 2025-12-08 | 2025-12-07 00:00:00 | 2025-12-06 18:00:00"
        " | 2025-12-07 06:00:00")


# --- checks on Metamapper's metastore and a real datastore ------------------------------

NOW = dt.datetime(2026, 12, 6, 21, 0, tzinfo=dt.UTC)
WEBHOOK_PATH = "/services/T1/B2/webhook-secret-part"
ROUTING_KEY = "pd-routing-key-secret-0123456789"


@dataclass
class World:
    """A workspace with a datastore on a real database, in Metamapper's metastore."""

    conn: psycopg.Connection
    cipher: Cipher
    workspace: workspaces.Workspace
    user_id: int
    datastore_id: str
    datastore_dsn: str

    def check(self, sql: str, expectations: list[tuple[str, dict[str, Any], str,
                                                        dict[str, Any]]],
              interval: dt.timedelta = dt.timedelta(hours=1), enabled: bool = True,
              name: str = "orders") -> str:
        specs = [ExpectationSpec(handler=h, handler_input=hi, pass_value=p, pass_value_input=pi)
                 for h, hi, p, pi in expectations]
        return define.create_check(
            self.conn, workspace_id=self.workspace.id, datastore_id=self.datastore_id,
            creator_id=self.user_id, name=name, sql_text=sql, expectations=specs,
            interval=interval, enabled=enabled)

    def rule(self, check_id: str, channel: str, config: dict[str, Any],
             interval: dt.timedelta = dt.timedelta(hours=1)) -> int:
        return define.add_alert_rule(
            self.conn, workspace_id=self.workspace.id, check_id=check_id, channel=channel,
            channel_config=config, name=f"{channel.lower()} rule", interval=interval)

    def integration(self, kind: str, auth: str, meta: dict[str, Any] | None = None) -> str:
        return define.add_integration(
            self.conn, workspace_id=self.workspace.id, user_id=self.user_id, kind=kind,
            auth=auth, displayable=f"{kind} of acme", meta=meta, cipher=self.cipher)

    def execute(self, check_id: str, epoch: int) -> execution.Report:
        def url(datastore_id: str) -> str:
            return datastores.load(self.conn, datastore_id).connection.url()

        return execution.execute(self.conn, check_id, epoch, datastore_url=url,
                                 clock=lambda: NOW)

    def run(self, check_id: str, now: dt.datetime = NOW) -> int:
        """Create this check's execution at ``now`` and execute it; its epoch."""
        [key] = [k for k in store.create_due_executions(self.conn, now)
                 if k.check_id == check_id]
        self.execute(check_id, key.epoch)
        return key.epoch


def _settings(dsn: str) -> datastores.ConnectionSettings:
    """A test database's URL as the columns of a datastore."""
    url = parse_url(dsn)
    return datastores.ConnectionSettings(
        engine_of(dsn), url.host or "", url.port or 0, url.path.lstrip("/"),
        url.username or "", url.password or "")


def _world(metamapper_db: MetamapperDB, datastore_dsn: str) -> Iterator[World]:
    cipher = Cipher.from_env()
    with psycopg.connect(metamapper_db.dsn, autocommit=True) as conn:
        user_id = workspaces.create_user(conn, "owner@example.org")
        workspace = workspaces.create_workspace(conn, "acme", "Acme", user_id, cipher)
        datastore_id = datastores.register(conn, workspace.id, "Warehouse",
                                           _settings(datastore_dsn), cipher=cipher)
        yield World(conn, cipher, workspace, user_id, datastore_id, datastore_dsn)


@pytest.fixture
def world(metamapper_db: MetamapperDB, postgres_dsn: str) -> Iterator[World]:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric)")
        conn.execute("INSERT INTO orders VALUES (1, 'ann', 10.5), (2, 'bob', NULL),"
                     " (3, 'ann', 4.5), (4, 'cy', 3)")
    yield from _world(metamapper_db, postgres_dsn)


def web_app_view(conn: psycopg.Connection, check_id: str) -> list[dict[str, Any]]:
    """A check's executions and their results, as the web app's check page reads them
    (the status derived from finished_at, error and fails_count)."""
    rows = conn.execute(
        """
        SELECT e.epoch,
               CASE WHEN e.finished_at IS NULL THEN 'PENDING'
                    WHEN e.fails_count > 0 OR e.error IS NOT NULL THEN 'FAILURE'
                    ELSE 'SUCCESS' END,
               e.tasks_count, e.fails_count, e.error,
               c.last_execution_id = e.id,
               coalesce(json_agg(json_build_array(x.handler_class, r.passed, r.expected_value,
                                                  r.observed_value) ORDER BY x.created_at)
                        FILTER (WHERE r.id IS NOT NULL), '[]')
        FROM checks_execution e JOIN checks c ON c.id = e.job_id
        LEFT JOIN checks_expectationresult r ON r.execution_id = e.id
        LEFT JOIN checks_expectation x ON x.id = r.expectation_id
        WHERE e.job_id = %s GROUP BY e.id, c.last_execution_id ORDER BY e.epoch
        """, (check_id,)).fetchall()
    return [{"epoch": r[0], "status": r[1], "tasks": r[2], "fails": r[3], "error": r[4],
             "last": r[5], "results": [tuple(x) for x in r[6]]} for r in rows]


PASSING = [
    (ROW_COUNT, {"op": "equal to"}, CONSTANT, {"value": 4}),
    (AVG, {"column": "amount", "op": "greater than", "skipna": True}, CONSTANT, {"value": 5}),
    (DUPLICATES, {"columns": ["customer"], "op": "less than or equal to", "skipna": True},
     CONSTANT, {"value": 1}),
]


def test_a_passing_check_on_postgresql(world: World) -> None:
    check_id = world.check("SELECT * FROM orders WHERE id <= 4 -- {{ ds }}", PASSING)

    epoch = world.run(check_id)

    assert web_app_view(world.conn, check_id) == [{
        "epoch": store.epoch_of(NOW), "status": "SUCCESS", "tasks": 3, "fails": 0,
        "error": None, "last": True,
        "results": [(ROW_COUNT, True, 4, 4), (AVG, True, 5, 6), (DUPLICATES, True, 1, 1)],
    }]
    finished = store.finished(world.conn, check_id, epoch)
    assert finished is not None and finished.status == store.SUCCESS


def test_a_failing_check_on_postgresql(world: World) -> None:
    check_id = world.check("SELECT * FROM orders", [
        (ROW_COUNT, {"op": "greater than"}, CONSTANT, {"value": 10}),
        (FIRST, {"column": "customer", "op": "equal to"}, CONSTANT, {"value": None}),
        (MAX, {"column": "amount", "op": "less than", "skipna": True}, CONSTANT, {"value": 5}),
    ])

    world.run(check_id)

    [view] = web_app_view(world.conn, check_id)
    assert (view["status"], view["tasks"], view["fails"], view["error"]) == (
        "FAILURE", 3, 2, None)
    assert view["results"] == [(ROW_COUNT, False, 10, 4), (FIRST, True, None, None),
                               (MAX, False, 5, 10)]


def test_the_datastores_error_is_the_executions(world: World) -> None:
    check_id = world.check("SELECT * FROM no_such_table", PASSING)

    world.run(check_id)

    [view] = web_app_view(world.conn, check_id)
    assert view["status"] == "FAILURE" and view["fails"] == 3 and view["results"] == []
    assert 'relation "no_such_table" does not exist' in view["error"]


def test_a_rollup_compares_with_the_expectations_own_past(world: World) -> None:
    check_id = world.check("SELECT * FROM orders", [
        (ROW_COUNT, {"op": "equal to"}, ROLLUP, {"aggregator": "average", "interval": 86400}),
    ], interval=dt.timedelta(minutes=30))

    world.run(check_id, NOW)  # no history: passes
    with psycopg.connect(world.datastore_dsn, autocommit=True) as datastore:
        datastore.execute("INSERT INTO orders VALUES (5, 'dee', 1)")
    world.run(check_id, NOW + dt.timedelta(hours=1))  # 5 rows against an average of 4

    views = web_app_view(world.conn, check_id)
    assert [(v["status"], v["results"]) for v in views] == [
        ("SUCCESS", [(ROW_COUNT, True, None, 4)]),
        ("FAILURE", [(ROW_COUNT, False, 4, 5)]),
    ]


def test_executions_are_created_on_each_checks_interval(world: World) -> None:
    hourly = world.check("SELECT 1", PASSING)
    daily = world.check("SELECT 1", PASSING, interval=dt.timedelta(days=1))
    world.check("SELECT 1", PASSING, enabled=False)

    def created(at: dt.datetime) -> set[str]:
        return {key.check_id for key in store.create_due_executions(world.conn, at)}

    assert created(NOW) == {hourly, daily}
    assert created(NOW) == set()  # the same second again: nothing new
    assert created(NOW + dt.timedelta(minutes=59)) == set()
    assert created(NOW + dt.timedelta(hours=1)) == {hourly}
    assert created(NOW + dt.timedelta(days=1)) == {hourly, daily}


def test_a_check_without_expectations_is_disabled(world: World) -> None:
    check_id = world.check("SELECT 1", [])
    [key] = store.create_due_executions(world.conn, NOW)

    assert world.execute(check_id, key.epoch).ran is False
    assert web_app_view(world.conn, check_id) == []
    row = world.conn.execute("SELECT is_enabled FROM checks WHERE id = %s",
                             (check_id,)).fetchone()
    assert row == (False,)


def test_a_finished_execution_delivered_again_is_not_run_twice(world: World) -> None:
    check_id = world.check("SELECT * FROM orders", PASSING)
    epoch = world.run(check_id)

    world.execute(check_id, epoch)

    [view] = web_app_view(world.conn, check_id)
    assert len(view["results"]) == 3


def test_a_check_on_mariadb(metamapper_db: MetamapperDB, mariadb_dsn: str) -> None:
    import pymysql

    from metamapper.inspectors.mysql import connect_args

    conn = pymysql.connect(**connect_args(mariadb_dsn), database=mariadb_dsn.rsplit("/", 1)[1],
                           autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE orders"
                       " (id int PRIMARY KEY, customer text, amount decimal(8,2))")
        cursor.execute("INSERT INTO orders VALUES (1, 'ann', 10.5), (2, 'bob', NULL),"
                       " (3, 'ann', 4.5), (4, 'cy', 3)")
    conn.close()
    for world in _world(metamapper_db, mariadb_dsn):
        passing = world.check("SELECT * FROM orders", PASSING)
        failing = world.check("SELECT * FROM orders WHERE amount > 4", PASSING)
        world.run(passing)
        world.execute(failing, store.epoch_of(NOW))

        [ok] = web_app_view(world.conn, passing)
        [bad] = web_app_view(world.conn, failing)
        assert ok["status"] == "SUCCESS"
        assert (bad["status"], bad["fails"]) == ("FAILURE", 1)
        assert bad["results"][0] == (ROW_COUNT, False, 4, 2)


# --- alerts -----------------------------------------------------------------------------

@pytest.fixture
def channels(world: World, smtp_server: SmtpServer, http_receiver: HttpReceiver,
             monkeypatch: pytest.MonkeyPatch) -> HttpReceiver:
    """The environment sends mail to ``smtp_server`` and PagerDuty events to the receiver."""
    for key, value in {
        "METAMAPPER_EMAIL_BACKEND": SMTP_BACKEND, "METAMAPPER_EMAIL_HOST": smtp_server.host,
        "METAMAPPER_EMAIL_PORT": str(smtp_server.port),
        "METAMAPPER_WEBSERVER_ORIGIN": "https://mm.example.org",
        "METAMAPPER_PAGERDUTY_EVENTS_URL": http_receiver.url + "/v2/enqueue",
    }.items():
        monkeypatch.setenv(key, value)
    return http_receiver


def _failing_check_with_every_channel(world: World, receiver: HttpReceiver) -> str:
    check_id = world.check("SELECT * FROM orders", [
        (ROW_COUNT, {"op": "greater than"}, CONSTANT, {"value": 10}),
        (ROW_COUNT, {"op": "equal to"}, CONSTANT, {"value": 4}),
    ])
    slack = world.integration("SLACK", receiver.url + WEBHOOK_PATH, {"bot_name": "dq-bot"})
    pagerduty = world.integration("PAGERDUTY", ROUTING_KEY)
    world.rule(check_id, "EMAIL", {"emails": ["oncall@example.org", "lead@example.org"]})
    world.rule(check_id, "SLACK", {"integration_id": slack, "channel": "#dq",
                                   "severity": "warning"})
    world.rule(check_id, "PAGERDUTY", {"integration_id": pagerduty, "severity": "critical"})
    return check_id


def test_a_failed_check_alerts_by_email_slack_and_pagerduty(
        world: World, channels: HttpReceiver, smtp_server: SmtpServer,
        caplog: pytest.LogCaptureFixture) -> None:
    check_id = _failing_check_with_every_channel(world, channels)
    epoch = world.run(check_id)
    execution_id = world.conn.execute("SELECT id FROM checks_execution WHERE job_id = %s",
                                      (check_id,)).fetchone()[0]  # type: ignore[index]
    sender = alerts.Sender(world.conn, world.cipher, MailSettings.from_environ())

    with caplog.at_level(logging.DEBUG):
        done = alerts.dispatch(sender, check_id, epoch, NOW)

    assert done.errors == () and len(done.alerted) == 3
    title = "Metamapper check failed: orders <2026-12-06T21:00:00>"
    url_start = f"https://mm.example.org/acme/datastores/warehouse/checks/{check_id}"
    error = "1 out of 2 expectation(s) were not met."

    assert sorted(m.recipients[0] for m in smtp_server.mails) == [
        "lead@example.org", "oncall@example.org"]
    mail = smtp_server.mails[0]
    assert mail.message["Subject"] == title
    assert error in mail.body("plain") and url_start in mail.body("plain")

    [slack] = channels.to(WEBHOOK_PATH)
    message = slack.json()
    assert (message["channel"], message["username"]) == ("#dq", "dq-bot")
    [attachment] = message["attachments"]
    assert attachment["title"] == title and attachment["text"] == error
    assert attachment["title_link"].startswith(url_start + "?selectedExecution=")
    assert attachment["color"] == "#FFD30D"
    assert {"title": "Datastore", "value": "Warehouse", "short": False} in attachment["fields"]

    [event] = channels.to("/v2/enqueue")
    body = event.json()
    assert body["routing_key"] == ROUTING_KEY and body["event_action"] == "trigger"
    assert body["dedup_key"] == f"{check_id}-{epoch}"
    assert body["payload"] == {"summary": title, "severity": "critical", "source": "Metamapper",
                               "component": "Warehouse (warehouse)", "group": "Acme (acme)"}

    last = world.conn.execute("SELECT DISTINCT last_failure_id FROM checks_alertrule"
                              " WHERE job_id = %s", (check_id,)).fetchall()
    assert last == [(execution_id,)]
    assert "webhook-secret-part" not in caplog.text and ROUTING_KEY not in caplog.text


def test_a_rule_alerts_again_only_after_its_interval(world: World, channels: HttpReceiver,
                                                    smtp_server: SmtpServer) -> None:
    check_id = world.check("SELECT * FROM orders", [
        (ROW_COUNT, {"op": "greater than"}, CONSTANT, {"value": 10})])
    world.rule(check_id, "EMAIL", {"emails": ["oncall@example.org"]},
               interval=dt.timedelta(hours=2))
    sender = alerts.Sender(world.conn, world.cipher, MailSettings.from_environ())

    for hours in range(4):  # the check runs every hour and fails every time
        at = NOW + dt.timedelta(hours=hours)
        alerts.dispatch(sender, check_id, world.run(check_id, at), at)

    assert len(smtp_server.mails) == 2  # at 0 h and at 2 h


def test_a_passing_check_alerts_nobody(world: World, channels: HttpReceiver,
                                       smtp_server: SmtpServer) -> None:
    check_id = world.check("SELECT * FROM orders", PASSING)
    world.rule(check_id, "EMAIL", {"emails": ["oncall@example.org"]})
    sender = alerts.Sender(world.conn, world.cipher, MailSettings.from_environ())

    assert alerts.dispatch(sender, check_id, world.run(check_id), NOW) == alerts.Dispatch()
    assert smtp_server.mails == []


def test_a_channel_that_fails_does_not_stop_the_others(
        world: World, channels: HttpReceiver, smtp_server: SmtpServer) -> None:
    check_id = world.check("SELECT * FROM orders", [
        (ROW_COUNT, {"op": "greater than"}, CONSTANT, {"value": 10})])
    world.rule(check_id, "SLACK", {"integration_id": "gone", "channel": "#dq",
                                   "severity": "info"})
    world.rule(check_id, "EMAIL", {"emails": ["oncall@example.org"]})
    sender = alerts.Sender(world.conn, world.cipher, MailSettings.from_environ())

    done = alerts.dispatch(sender, check_id, world.run(check_id), NOW)

    assert len(done.alerted) == 1 and len(smtp_server.mails) == 1
    assert done.errors == ("alert rule 'slack rule' (SLACK): the workspace has no SLACK"
                           " integration 'gone'",)
    pending = world.conn.execute("SELECT channel FROM checks_alertrule WHERE job_id = %s"
                                 " AND last_failure_id IS NULL", (check_id,)).fetchall()
    assert pending == [("SLACK",)]  # tried again by the next failure


def test_the_celery_tasks_chain_from_the_beats_message_to_the_alerts(
        world: World, channels: HttpReceiver, smtp_server: SmtpServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """create_executions -> execute_check -> dispatch_alerts, as the worker runs them (in
    this process: each message is run where it is sent)."""
    check_id = _failing_check_with_every_channel(world, channels)
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)

    create_executions.delay()

    [view] = web_app_view(world.conn, check_id)
    assert (view["status"], view["fails"]) == ("FAILURE", 1)
    assert len(smtp_server.mails) == 2
    assert len(channels.to(WEBHOOK_PATH)) == 1 and len(channels.to("/v2/enqueue")) == 1
    assert json.loads(channels.to("/v2/enqueue")[0].body)["routing_key"] == ROUTING_KEY


def test_a_real_worker_runs_the_beats_message_through_to_the_alerts(
        world: World, channels: HttpReceiver, smtp_server: SmtpServer,
        metamapper_db: MetamapperDB, redis_url: str, start_worker: Callable[..., Process],
        process_env: Callable[..., dict[str, str]]) -> None:
    """The beat's message, as upstream's beat sends it (routed to ``checks``), executed by
    a worker process; the follow-up messages travel through the broker too."""
    check_id = _failing_check_with_every_channel(world, channels)
    env = process_env(
        **metamapper_db.env, METAMAPPER_CELERY_BROKER_URL=redis_url,
        **{key: value for key, value in os.environ.items()
           if key.startswith(("METAMAPPER_EMAIL_", "METAMAPPER_PAGERDUTY_",
                              "METAMAPPER_WEBSERVER_"))})
    worker = start_worker(env, queues="checks,default", name="checks")
    with web_app(redis_url) as sender:
        sender.send_task("app.checks.tasks.scheduler.create_executions")

    wait_until(lambda: len(channels.to("/v2/enqueue")) == 1 and len(smtp_server.mails) == 2
               and len(channels.to(WEBHOOK_PATH)) == 1, timeout=60, what="the three alerts")
    [view] = web_app_view(world.conn, check_id)
    assert (view["status"], view["fails"], view["tasks"]) == ("FAILURE", 1, 2)
    log = worker.log
    for name in ("create_executions", "execute_check", "dispatch_alerts"):
        assert re.search(rf"Task app\.checks\.tasks\.\w+\.{name}\[[^]]+\] succeeded", log), name
    assert "webhook-secret-part" not in log and ROUTING_KEY not in log
    assert "unregistered" not in log.lower() and "cannot run here" not in log


def test_an_unreachable_metastore_is_retried_not_dropped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without retries the execution would stay pending for good. A metastore that hangs
    up on every connection counts the attempts (run here, the retries follow at once)."""
    attempts: list[int] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            attempts.append(1)
            connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    monkeypatch.setenv("METAMAPPER_DB_HOST", "127.0.0.1")
    monkeypatch.setenv("METAMAPPER_DB_PORT", str(listener.getsockname()[1]))
    monkeypatch.setenv("METAMAPPER_DB_PASSWORD", "metastore-password")
    task = app.tasks["app.checks.tasks.core.execute_check"]
    try:
        result = task.apply(args=["c1", 1765000000])
    finally:
        listener.close()
        thread.join(10)

    assert len(attempts) == task.max_retries + 1 > 1
    assert result.state == "FAILURE"
    assert "metastore-password" not in str(result.result)


def test_two_runs_of_one_execution_store_its_results_once(world: World) -> None:
    """Two workers running one message at once both get to the end; only the first
    closes the execution."""
    check_id = world.check("SELECT * FROM orders", PASSING)
    [key] = store.create_due_executions(world.conn, NOW)
    running = store.execution(world.conn, check_id, key.epoch)
    assert running is not None
    expectation_ids = [e.id for e in store.live_expectations(world.conn, check_id)]
    results = [store.Result(expectation_id=i, passed=True, expected_value=1, observed_value=1)
               for i in expectation_ids]

    first = store.finish(world.conn, running, results, tasks_count=3, fails_count=0,
                         error=None, now=NOW)
    second = store.finish(world.conn, running, results, tasks_count=3, fails_count=0,
                          error=None, now=NOW)

    assert (first, second) == (True, False)
    [view] = web_app_view(world.conn, check_id)
    assert len(view["results"]) == 3


def test_checks_of_the_same_sql_share_its_query_as_in_the_web_app(world: World) -> None:
    first = world.check("SELECT * FROM orders", PASSING)
    second = world.check("SELECT * FROM orders", PASSING, name="orders again")

    rows = world.conn.execute(
        "SELECT DISTINCT q.key FROM checks c JOIN checks_query q ON q.id = c.query_id"
        " WHERE c.id IN (%s, %s)", (first, second)).fetchall()
    assert rows == [(hashlib.md5(b"SELECT * FROM orders").hexdigest(),)]
