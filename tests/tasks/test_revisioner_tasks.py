"""The revisioner's tasks in a real worker, sent the messages Metamapper's web app sends,
on Metamapper's metastore with datastores registered the web app's way."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from celery import Celery

from devenv.waiting import wait_until
from metamapper.metastore import datastores, open_metastore, workspaces
from metamapper.metastore import revisioner as runs
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.notify import MailSettings, deliver
from metamapper.notify.mail import SMTP_BACKEND
from tests.tasks.conftest import MetamapperDB
from tests.tasks.receivers import SmtpServer, smtp_server
from tests.tasks.test_definitions import register, tables

__all__ = ["smtp_server"]

SECRET = "TopSecret-4b1d"
ROUTES = {
    "app.checks.tasks.*": {"queue": "checks"},
    "app.revisioner.tasks.*": {"queue": "revisioner"},
    "app.definitions.tasks.usage.*": {"queue": "usage"},
}


def web_app(broker: str) -> Celery:
    """The web app's side of the broker: its queues and routes, nothing registered."""
    client = Celery("metamapper", broker=broker)
    client.conf.task_default_queue = "default"
    client.conf.task_routes = ROUTES
    return client


def new_run(conn: psycopg.Connection, datastore_id: str) -> str:
    """A run row as the web app writes one when a datastore is created."""
    run_id = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO revisioner_run (id, created_at, started_at, datastore_id, workspace_id,"
        " tasks_count, fails_count) SELECT %s, now(), now(), id, workspace_id, 0, 0"
        " FROM definitions_datastore WHERE id = %s",
        (run_id, datastore_id),
    )
    return run_id


def finished(conn: psycopg.Connection, run_id: str) -> runs.Run:
    def done() -> runs.Run | None:
        run = runs.get(conn, run_id)
        return run if run is not None and run.finished_at is not None else None

    return wait_until(done, 60, what=f"run {run_id} finished")


def task_states(conn: psycopg.Connection, run_id: str) -> dict[str, tuple[str, str | None]]:
    return {t.path.split("/")[0]: (t.status, t.error) for t in runs.tasks(conn, run_id)}


def worker_env(process_env: Callable[..., dict[str, str]], broker: str,
               metamapper_db: MetamapperDB) -> dict[str, str]:
    return process_env(
        METAMAPPER_BROKER_URL=broker,
        METAMAPPER_CELERY_SETTINGS=json.dumps({
            "metamapper_inspect_max_retries": 1,
            "metamapper_inspect_retry_delay_seconds": 1,
        }),
        **metamapper_db.env,
    )


def test_runs_the_web_app_sends_go_through_their_states(
    redis_url: str, metamapper_db: MetamapperDB, postgres_dsn: str,
    start_worker: Callable[..., Any], process_env: Callable[..., dict[str, str]],
) -> None:
    psycopg.connect(postgres_dsn, autocommit=True).execute(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, note TEXT); CREATE TABLE legacy (id INT)"
    )
    start_worker(worker_env(process_env, redis_url, metamapper_db), queues="revisioner")
    client = web_app(redis_url)
    with open_metastore() as conn:
        datastore_id = register(conn, postgres_dsn, "postgresql")

        # A datastore created in the web app: a run row, then start_run(run.id).
        first = new_run(conn, datastore_id)
        client.send_task("app.revisioner.tasks.v1.core.start_run", args=[first])
        run = finished(conn, first)
        assert (run.status, run.tasks_count, run.fails_count) == ("SUCCESS", 3, 0)
        assert task_states(conn, first) == {
            "start_run": ("SUCCESS", None), "revisioner": ("SUCCESS", None),
            "complete_run": ("SUCCESS", None),
        }
        assert {name: row[4] for name, row in tables(conn, datastore_id).items()} == {
            "orders": False, "legacy": False}
        orders_row = tables(conn, datastore_id)["orders"][0]
        server_version = psycopg.connect(postgres_dsn).execute("SHOW server_version").fetchone()
        assert server_version is not None
        wait_until(lambda: datastores.load(conn, datastore_id).version == server_version[0],
                   30, what="the datastore's version recorded")

        # "Sync now": the web app runs create_runs and queue_runs(slug, 0) itself; the
        # beat sends them to the worker, as here.
        psycopg.connect(postgres_dsn, autocommit=True).execute(
            "DROP TABLE legacy; ALTER TABLE orders RENAME TO purchases")
        slug = datastores.load(conn, datastore_id).slug
        client.send_task("app.revisioner.tasks.v1.scheduler.create_runs", args=[slug])
        second = wait_until(lambda: runs.unqueued(conn, slug), 30, what="a run created")[0].id
        client.send_task("app.revisioner.tasks.v1.scheduler.queue_runs", args=[slug, 0])
        assert finished(conn, second).status == "SUCCESS"
        after = tables(conn, datastore_id)
        assert after["legacy"][4] is True
        assert after["purchases"][0] == orders_row and "orders" not in after
        # Queued once: a second queue_runs finds nothing left to queue.
        assert runs.unqueued(conn, slug) == []


def test_an_unreachable_datastore_fails_its_run_and_alerts_its_contacts(
    redis_url: str, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
    process_env: Callable[..., dict[str, str]], smtp_server: SmtpServer,
) -> None:
    worker = start_worker(worker_env(process_env, redis_url, metamapper_db), queues="revisioner")
    client = web_app(redis_url)
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "owner@example.org")
        workspace = workspaces.create_workspace(conn, "acme", "Acme", user)
        datastore_id = datastores.register(
            conn, workspace.id, "Warehouse",
            ConnectionSettings("postgresql", "127.0.0.1", 1, "dw", "app", SECRET),
            incident_contacts=["oncall@example.org", "dba@example.org"],
        )
        run_id = new_run(conn, datastore_id)
        client.send_task("app.revisioner.tasks.v1.core.start_run", args=[run_id])
        run = finished(conn, run_id)
        assert (run.status, run.tasks_count, run.fails_count) == ("FAILURE", 1, 1)
        [(status, error)] = task_states(conn, run_id).values()
        assert status == "FAILURE" and error is not None and "unreachable" in error
        assert SECRET not in error

    # The alert: one e-mail task per incident contact, the web app's e-mail task.
    sent = []
    with client.connection_for_read() as connection:
        queue = connection.SimpleQueue("default")
        for _ in range(2):
            message = queue.get(timeout=30)
            sent.append((message.headers["task"], message.payload[1]))
            message.ack()
        queue.close()
    assert {task for task, _ in sent} == {"app.notifications.tasks.deliver"}
    assert sorted(kwargs["to_email"] for _, kwargs in sent) == [
        "dba@example.org", "oncall@example.org"]
    settings = MailSettings.from_environ({
        "METAMAPPER_EMAIL_BACKEND": SMTP_BACKEND, "METAMAPPER_EMAIL_HOST": smtp_server.host,
        "METAMAPPER_EMAIL_PORT": str(smtp_server.port),
    })
    for _, kwargs in sent:
        deliver(**kwargs, settings=settings)
    subjects = {mail.message["Subject"] for mail in smtp_server.mails}
    assert subjects == {'Sync failed for your "Warehouse" datastore in acme'}
    assert "warehouse" in smtp_server.mails[0].body("plain")
    assert SECRET not in worker.log
    assert worker.log.count("datastore unreachable, retry in") == 1  # one retry configured


def test_a_run_past_its_time_is_failed_and_alerted(
    redis_url: str, metamapper_db: MetamapperDB, postgres_dsn: str,
    start_worker: Callable[..., Any], process_env: Callable[..., dict[str, str]],
) -> None:
    start_worker(worker_env(process_env, redis_url, metamapper_db), queues="revisioner")
    client = web_app(redis_url)
    with open_metastore() as conn:
        datastore_id = register(conn, postgres_dsn, "postgresql")
        stale = new_run(conn, datastore_id)
        conn.execute("UPDATE revisioner_run SET created_at = now() - interval '61 minutes',"
                     " started_at = NULL WHERE id = %s", (stale,))
        recent = new_run(conn, datastore_id)
        client.send_task("app.revisioner.tasks.v1.scheduler.detect_run_timeouts")
        run = finished(conn, stale)
        assert run.status == "FAILURE"
        assert task_states(conn, stale) == {"start_run": ("REVOKED", None)}
        recent_run = runs.get(conn, recent)
        assert recent_run is not None and recent_run.finished_at is None
    with client.connection_for_read() as connection:
        queue = connection.SimpleQueue("default")
        message = queue.get(timeout=30)
        assert message.payload[1]["to_email"] == "oncall@example.org"
        message.ack()
        queue.close()
