"""Metamapper 1.0 served by the project's fleet, end to end on the real node.

Metamapper's web app is played from here, as far as the workers can tell: it writes its
rows in a Metamapper 1.0 metastore (a database of the suite's PostgreSQL with
``schema.sql``) and publishes the task messages its own code publishes (Celery 4.4's
protocol 2, to the queues its routes pick: ``metamapper_webapp``). The operator runs the
worker image in four pools (``default``, ``revisioner``, ``checks``, ``usage``) and the
beat, the metastore given to the pods by the Secret the example names, as
``devenv.metastore`` gives it. Then the rows the web app reads are asserted
(``metamapper_views``): the catalog of a PostgreSQL and a MariaDB datastore after their
first runs, the runs, a check's results, usage scores from the PostgreSQL datastore's
``pg_stat_statements``, the heartbeat and ``/health``; and what reached a real SMTP server
and a webhook receiver (Slack's and PagerDuty's request shapes), both listening where pods
reach them. No container's log holds a task error (``devenv.podlogs``) or a secret.

Beat starts once the datastores are in the catalog and queried: its first minute sends
the check executions and the usage collection, which then see the catalog and every
query (a datastore is collected once in four hours).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from celery import Celery
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devenv import metastore, services
from devenv.controlplane import free_port
from devenv.podlogs import PodLogs
from devenv.stack import Stack
from devenv.waiting import wait_until
from metamapper.checks import define
from metamapper.checks.define import ExpectationSpec
from metamapper.checks.pass_values import CONSTANT
from metamapper.metastore import MetastoreSettings, open_metastore, workspaces
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.notify.mail import SMTP_BACKEND
from metamapper_operator import crd
from tests.e2e.conftest import NAMESPACE, Fleet, Fleets, Json
from tests.e2e.metamapper_views import RunView, catalog, finished_run, heartbeat
from tests.e2e.metamapper_webapp import (
    HEALTHY,
    CreatedDatastore,
    WebApp,
    create_datastore,
    health,
    membership_granted,
)
from tests.tasks.conftest import MetamapperDB, metamapper_db
from tests.tasks.receivers import HttpReceiver, SmtpServer, serving_http, serving_smtp
from tests.tasks.sql_scripts import on_mariadb
from tests.tasks.test_checks import ROW_COUNT, web_app_view
from tests.tasks.usage_world import PASSWORD, TABLES, Shop, shop_database

__all__ = ["metamapper_db"]

NAME = "metamapper"
#: The Secret of the result backend's URL (the metastore's is the example's, as
#: devenv.metastore makes it for the walkthrough and the demo).
RESULTS_SECRET = "metamapper-results"
WORKER_POOLS = ("default", "checks", "usage")  # one pod each from the start
GRACE_SECONDS = 60
RUN_SECONDS = 240      # the revisioner pool wakes from zero first
BEAT_SECONDS = 300     # the scheduler pod starts, then beat's next minute

OWNER, ONCALL, NEW_MEMBER = "owner@example.org", "oncall@example.org", "new.member@example.org"
ORIGIN = "https://mm.example.org"
WEBHOOK_PATH = "/services/T1/B2/webhook-secret-part"
EVENTS_PATH = "/v2/enqueue"
ROUTING_KEY = "pd-routing-key-secret-0123456789"
WAREHOUSE_PASSWORD = "Warehouse-5ecret-81"
SECRETS = ("webhook-secret-part", ROUTING_KEY, WAREHOUSE_PASSWORD, PASSWORD)
#: The views pg_stat_statements creates beside the shop's tables (the catalog has them).
EXTENSION_VIEWS = {("public", "pg_stat_statements"), ("public", "pg_stat_statements_info")}


# --- datastores and receivers where pods reach them -----------------------------------------

@pytest.fixture
def mailbox() -> Iterator[SmtpServer]:
    with serving_smtp(services.HOST) as server:
        yield server


@pytest.fixture
def webhooks() -> Iterator[HttpReceiver]:
    with serving_http(services.HOST) as receiver:
        yield receiver


@pytest.fixture
def shop_roles(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    """The shop's tables and pg_stat_statements in ``postgres_dsn``'s database; two roles
    that query it."""
    with shop_database(postgres_dsn) as roles:
        yield roles


@pytest.fixture
def warehouse(mariadb_dsn: str) -> Iterator[ConnectionSettings]:
    """A MariaDB datastore, read by a user of its own with a password, as pods reach it."""
    database = mariadb_dsn.rsplit("/", 1)[1]
    user = f"mm_{uuid.uuid4().hex[:8]}"
    on_mariadb(mariadb_dsn)(
        "CREATE TABLE orders (id int PRIMARY KEY, customer varchar(20), amount decimal(8,2));"
        "INSERT INTO orders VALUES (1, 'ann', 10.5), (2, 'bob', NULL), (3, 'ann', 4.5),"
        " (4, 'cy', 3);"
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{WAREHOUSE_PASSWORD}';"
        f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'")
    yield ConnectionSettings("mysql", services.HOST, services.MARIADB_PORT, database, user,
                             WAREHOUSE_PASSWORD)
    on_mariadb(mariadb_dsn)(f"DROP USER '{user}'@'%'")


def shop_settings(postgres_dsn: str) -> ConnectionSettings:
    """The shop's database as pods reach it (the server trusts the pods' addresses)."""
    return ConnectionSettings("postgresql", services.HOST, services.POSTGRES_PORT,
                              str(conninfo_to_dict(postgres_dsn)["dbname"]), "postgres",
                              PASSWORD)


# --- the fleet ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Receivers:
    mailbox: SmtpServer
    webhooks: HttpReceiver

    def env(self) -> list[Json]:
        return [{"name": key, "value": value} for key, value in {
            "METAMAPPER_EMAIL_BACKEND": SMTP_BACKEND,
            "METAMAPPER_EMAIL_HOST": self.mailbox.host,
            "METAMAPPER_EMAIL_PORT": str(self.mailbox.port),
            "METAMAPPER_WEBSERVER_ORIGIN": ORIGIN,
            "METAMAPPER_PAGERDUTY_EVENTS_URL": self.webhooks.url + EVENTS_PATH,
        }.items()]


def pool(name: str, min_replicas: int, **autoscaling: int) -> Json:
    return {"name": name, "queues": [name], "concurrency": 2, "minReplicas": min_replicas,
            "maxReplicas": 1, "terminationGracePeriodSeconds": GRACE_SECONDS,
            "autoscaling": {"scaleDownStabilizationSeconds": 4, **autoscaling}}


def metamapper(stack: Stack, broker: str, receivers: Receivers, scheduler: bool) -> Json:
    """The Metamapper: the worker image, four pools, the metastore and the result backend
    from their Secrets; a datastore that cannot be reached fails its run after one retry."""
    assert stack.images is not None
    return {
        "apiVersion": crd.API_VERSION, "kind": crd.KIND, "metadata": {"name": NAME},
        "spec": {
            "image": stack.images.worker,
            "broker": {"url": broker},
            "celery": {
                "resultBackendSecretRef": {"name": RESULTS_SECRET},
                "settings": {"metamapper_inspect_max_retries": 1,
                             "metamapper_inspect_retry_delay_seconds": 1},
            },
            "envFrom": [{"secretRef": {"name": metastore.secret_name()}}],
            "env": receivers.env(),
            "pools": [*(pool(name, 1) for name in WORKER_POOLS),
                      # Wakes from zero on the first start_run; stays up for the scenario.
                      pool("revisioner", 0, scaleToZeroCooldownSeconds=900)],
            "scheduler": {"enabled": scheduler, "replicas": 1},
        },
    }


def apply_fleet(fleet: Fleet, receivers: Receivers, scheduler: bool) -> None:
    body = metamapper(fleet.stack, fleet.broker, receivers, scheduler)
    fleet.stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(body))


def apply_secrets(stack: Stack, db: MetamapperDB, results_url: str) -> None:
    """The metastore as pods reach it (the suite's PostgreSQL on the host's address), and
    the result backend."""
    pods = MetastoreSettings.from_dsn(make_conninfo(db.dsn, host=services.HOST))
    stack.kubectl("apply", "-n", NAMESPACE, "-f", "-",
                  input=metastore.Metastore(pods, db.fernet_key).secret())
    stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": RESULTS_SECRET},
        "stringData": {"url": results_url}}))


# --- the scenario ---------------------------------------------------------------------------

def test_metamapper_web_app_and_beat_served_by_the_operators_fleet(
        stack: Stack, redis_url: str, metamapper_db: MetamapperDB, postgres_dsn: str,
        shop_roles: tuple[str, str], warehouse: ConnectionSettings, mailbox: SmtpServer,
        webhooks: HttpReceiver, fleets: Fleets) -> None:
    # ``fleets`` last: its pods are gone before the databases and receivers they use.
    receivers = Receivers(mailbox, webhooks)
    fleet = fleets(NAME, redis_url)
    apply_secrets(stack, metamapper_db, redis_url)
    try:
        apply_fleet(fleet, receivers, scheduler=False)
        fleet.wait_for_workers(len(WORKER_POOLS))
        web = WebApp(redis_url)
        logs = PodLogs(stack.kubectl, NAMESPACE)
        with open_metastore() as conn:
            scenario(fleet, web, conn, receivers, logs, metamapper_db.dsn, postgres_dsn,
                     shop_roles, warehouse)
    finally:
        stack.kubectl("delete", "secret", "-n", NAMESPACE, metastore.secret_name(),
                      RESULTS_SECRET, "--ignore-not-found")


def scenario(fleet: Fleet, web: WebApp, conn: psycopg.Connection, receivers: Receivers,
             logs: PodLogs, metastore_dsn: str, postgres_dsn: str,
             shop_roles: tuple[str, str], warehouse: ConnectionSettings) -> None:
    mails, hooks = receivers.mailbox, receivers.webhooks

    # The web app: a user signs up with a workspace and invites a member.
    owner = workspaces.create_user(conn, OWNER)
    acme = workspaces.create_workspace(conn, "acme", "Acme", owner)
    invited = membership_granted(web, NEW_MEMBER, acme.name, "MEMBER", user_exists=False)

    # Three datastores created in the UI, each with its first run and start_run.
    def created(name: str, settings: ConnectionSettings) -> CreatedDatastore:
        return create_datastore(conn, web, user_id=owner, user_email=OWNER,
                                workspace_id=acme.id, name=name, connection=settings)

    shop = created("Shop", shop_settings(postgres_dsn))
    dw = created("Warehouse", warehouse)
    broken = created("Broken", ConnectionSettings(
        "mysql", services.HOST, free_port(), "gone", "nobody", "x"))

    # Runs: the web app's run history.
    assert finished_run(conn, shop.run_id, RUN_SECONDS) == RunView("SUCCESS", {
        "start_run": ["SUCCESS"], "revisioner": ["SUCCESS", "SUCCESS"],  # public, sales
        "complete_run": ["SUCCESS"]})
    assert finished_run(conn, dw.run_id, RUN_SECONDS) == RunView("SUCCESS", {
        "start_run": ["SUCCESS"], "revisioner": ["SUCCESS"], "complete_run": ["SUCCESS"]})
    assert finished_run(conn, broken.run_id, RUN_SECONDS) == RunView("FAILURE", {
        "start_run": ["FAILURE"]})

    # The catalog: every table and its columns, from the real datastores.
    shop_tables = {(schema, table) for schema, tables in TABLES.items() for table in tables}
    shop_catalog = catalog(conn, shop.id)
    assert set(shop_catalog) == shop_tables | EXTENSION_VIEWS
    assert {shop_catalog[key] for key in shop_tables} == {("id", "note")}
    assert catalog(conn, dw.id) == {(warehouse.database, "orders"): (
        "id", "customer", "amount")}

    # The audit log, and the e-mails: the invitation, the failed sync to its contact.
    audited = wait_until(lambda: conn.execute(
        "SELECT verb, target_object_id FROM audit_activity ORDER BY target_object_id"
    ).fetchall(), 60, what="the audit log")
    assert audited == sorted(("created", d.id) for d in (shop, dw, broken))
    wait_until(lambda: len(mails.mails) == 2, 60, what="two e-mails")
    assert sorted((m.recipients, m.message["Subject"]) for m in mails.mails) == sorted([
        ((NEW_MEMBER,), invited),
        ((OWNER,), 'Sync failed for your "Broken" datastore in acme')])

    # The UI again: a check on the warehouse that fails, alerting on every channel; and the
    # shop's users query it (two roles, three statements).
    check_id = failing_check(conn, owner, acme.id, dw.id, hooks)
    alice, bob = shop_roles
    usage = Shop(metastore_dsn, shop.id, acme.id, postgres_dsn, shop_roles)
    usage.run(alice, "SELECT * FROM orders", times=3)
    usage.run(bob, "SELECT o.note, c.note FROM orders o JOIN customers c ON c.id = o.id",
              times=2)
    usage.run(bob, "SELECT count(*) FROM sales.items")

    # Beat starts: its every-minute entries follow. (The pods' logs so far are kept, in
    # case the change rolls the workers.)
    logs.read()
    apply_fleet(fleet, receivers, scheduler=True)
    wait_until(lambda: heartbeat(conn), BEAT_SECONDS, what="beat's heartbeat")

    # The check: its execution and results, and the alerts received.
    [execution] = wait_until(lambda: [v for v in web_app_view(conn, check_id)
                                      if v["status"] != "PENDING"], BEAT_SECONDS,
                             what="the check's execution")
    assert (execution["status"], execution["tasks"], execution["fails"], execution["error"],
            execution["results"]) == ("FAILURE", 2, 1, None, [
                (ROW_COUNT, False, 10, 4), (ROW_COUNT, True, 4, 4)])
    wait_until(lambda: len(mails.mails) == 3 and hooks.to(WEBHOOK_PATH)
               and hooks.to(EVENTS_PATH), 120, what="the check's three alerts")
    title = "Metamapper check failed: orders <"
    [alert] = [m for m in mails.mails if m.recipients == (ONCALL,)]
    assert alert.message["Subject"].startswith(title)
    assert f"{ORIGIN}/acme/datastores/warehouse/checks/{check_id}" in alert.body("plain")
    [slack] = hooks.to(WEBHOOK_PATH)
    assert slack.json()["channel"] == "#dq"
    assert slack.json()["attachments"][0]["title"].startswith(title)
    [event] = hooks.to(EVENTS_PATH)
    assert (event.json()["routing_key"], event.json()["event_action"],
            event.json()["dedup_key"]) == (ROUTING_KEY, "trigger",
                                           f"{check_id}-{execution['epoch']}")

    # Usage, from the shop's pg_stat_statements: per table, user and day, then the scores.
    wait_until(usage.usage, BEAT_SECONDS, what="the shop's usage collected")
    assert usage.usage() == {("public", "orders", alice): 3, ("public", "orders", bob): 2,
                             ("public", "customers", bob): 2, ("sales", "items", bob): 1}
    # (score, total queries, users, days): ranked items 1 < customers 2 < orders 5, of 3.
    assert usage.scores() == {"orders": (99, 5, 2, 0), "customers": (66, 2, 1, 0),
                              "items": (32, 1, 1, 0), "Returns": (0, None, None, None)}

    # /health, each request a new worker check (the message expires after 3 s).
    results = Celery("metamapper", backend=fleet.broker, set_as_current=False)
    try:
        healthy = {"metastore": HEALTHY, "scheduler": HEALTHY, "worker": HEALTHY}
        wait_until(lambda: health(conn, web, results) == healthy, 60, what="/health healthy")
    finally:
        results.close()

    # Every message was known and ran without error (no task error, no unregistered
    # message, in any container's log); no secret reached a log.
    logs.read()
    assert logs.errors() == []
    assert {pod: [s for s in SECRETS if s in log] for (pod, _), log in logs.logs.items()
            if any(s in log for s in SECRETS)} == {}


def failing_check(conn: psycopg.Connection, owner: int, workspace_id: str, datastore_id: str,
                  hooks: HttpReceiver) -> str:
    """A check on the warehouse's orders (4 rows: more than 10 fails, exactly 4 passes),
    with an e-mail, a Slack (incoming webhook) and a PagerDuty rule."""
    check_id = define.create_check(
        conn, workspace_id=workspace_id, datastore_id=datastore_id, creator_id=owner,
        name="orders", sql_text="SELECT * FROM orders", expectations=[
            ExpectationSpec(handler=ROW_COUNT, handler_input={"op": "greater than"},
                            pass_value=CONSTANT, pass_value_input={"value": 10}),
            ExpectationSpec(handler=ROW_COUNT, handler_input={"op": "equal to"},
                            pass_value=CONSTANT, pass_value_input={"value": 4}),
        ])
    slack = define.add_integration(conn, workspace_id=workspace_id, user_id=owner, kind="SLACK",
                                   auth=hooks.url + WEBHOOK_PATH, displayable="Acme's Slack",
                                   meta={"bot_name": "dq-bot"})
    pagerduty = define.add_integration(conn, workspace_id=workspace_id, user_id=owner,
                                       kind="PAGERDUTY", auth=ROUTING_KEY,
                                       displayable="Acme's PagerDuty")
    for channel, config in (("EMAIL", {"emails": [ONCALL]}),
                            ("SLACK", {"integration_id": slack, "channel": "#dq",
                                       "severity": "warning"}),
                            ("PAGERDUTY", {"integration_id": pagerduty,
                                           "severity": "critical"})):
        define.add_alert_rule(conn, workspace_id=workspace_id, check_id=check_id,
                              channel=channel, channel_config=config,
                              name=f"{channel.lower()} rule")
    return check_id
