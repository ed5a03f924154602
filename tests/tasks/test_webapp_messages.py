"""The web app's side of the end-to-end scenario (``tests/e2e/metamapper_webapp.py``):
its messages are Celery 4.4's task protocol 2, fit this image's tasks and routes, and a
worker of this image runs them from the broker as the web app publishes them; what the
scenario then reads (``tests/e2e/metamapper_views.py``) shows it."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery

from devenv.waiting import wait_until
from metamapper.celery import app
from metamapper.metastore import datastores, open_metastore, workspaces
from metamapper.notify.mail import SMTP_BACKEND
from tests.e2e import metamapper_webapp as webapp
from tests.e2e.metamapper_views import RunView, catalog, finished_run, heartbeat
from tests.e2e.metamapper_webapp import TaskMessage, WebApp
from tests.tasks.conftest import MetamapperDB, Process
from tests.tasks.receivers import SmtpServer, smtp_server

__all__ = ["smtp_server"]

NOW = datetime(2026, 12, 7, 0, 30, 15, 250000, tzinfo=UTC)
#: The headers Celery 5 adds to protocol 2, which Metamapper's Celery 4.4 never sends.
CELERY_5_ONLY = {"group_index", "ignore_result", "replaced_task_nesting", "stamped_headers",
                 "stamps"}

#: Messages of upstream's callers, with the arguments as those callers pass them.
SAMPLES: list[tuple[str, tuple[Any, ...] | list[Any], dict[str, Any], float | None]] = [
    (webapp.START_RUN, ["0f" * 16], {}, None),
    (webapp.AUDIT, (7, "ab" * 16), {
        "verb": "created", "old_values": {}, "new_values": {}, "target_object_id": "Xy12",
        "target_content_type_id": 3, "extras": {"datastore_id": "Xy12"}}, None),
    (webapp.DELIVER, (), {
        "namespace": "authorization", "template": "membership_granted", "subject": "Hi",
        "to_email": "new@example.org", "template_dict": {"user_exists": False}}, None),
    (webapp.ADD, [4, 4], {}, webapp.WORKER_CHECK_SECONDS),
]


def build(name: str, args: Any, kwargs: dict[str, Any], expires: float | None) -> TaskMessage:
    return webapp.task_message(name, args, kwargs, expires=expires, task_id="task-1",
                               reply_to="app-oid", origin="gen42@web", now=NOW)


@pytest.mark.parametrize(("name", "args", "kwargs", "expires"), SAMPLES,
                         ids=[sample[0] for sample in SAMPLES])
def test_a_message_is_what_celerys_protocol_2_makes_without_celery_5s_headers(
        name: str, args: Any, kwargs: dict[str, Any], expires: float | None) -> None:
    made = Celery("metamapper", set_as_current=False).amqp.as_task_v2(
        "task-1", name, args, kwargs, expires=expires, reply_to="app-oid", origin="gen42@web",
        now=NOW)
    built = build(name, args, kwargs, expires)

    assert list(built.headers) == list(webapp.CELERY_4_HEADERS)
    assert dict(built.headers) == {key: made.headers[key] for key in webapp.CELERY_4_HEADERS}
    assert set(made.headers) - set(built.headers) == CELERY_5_ONLY
    assert (dict(built.properties), built.body) == (made.properties, made.body)


def test_the_headers_say_what_upstreams_callers_pass() -> None:
    start = build(*SAMPLES[0])
    audit = build(*SAMPLES[1])
    add = build(*SAMPLES[3])
    assert start.headers["argsrepr"] == f"['{'0f' * 16}']"  # apply_async(args=[run.id])
    assert audit.headers["argsrepr"] == f"(7, '{'ab' * 16}')"  # .delay(user.pk, ...)
    assert audit.headers["kwargsrepr"].startswith("{'verb': 'created', 'old_values': {}")
    assert add.headers["expires"] == "2026-12-07T00:30:18.250000+00:00"
    assert (start.headers["root_id"], start.headers["parent_id"]) == ("task-1", None)


@pytest.mark.parametrize(("name", "args", "kwargs", "expires"), SAMPLES,
                         ids=[sample[0] for sample in SAMPLES])
def test_a_message_fits_the_images_task_and_goes_to_its_queue(
        name: str, args: Any, kwargs: dict[str, Any], expires: float | None) -> None:
    app.loader.import_default_modules()
    inspect.signature(app.tasks[name].run).bind(*args, **kwargs)
    assert build(name, args, kwargs, expires).queue == app.amqp.router.route({}, name)["queue"].name


def test_a_published_message_is_on_its_queue_as_kombu_stores_celerys(redis_url: str) -> None:
    web = WebApp(redis_url)
    sent = web.send(webapp.START_RUN, args=["0f" * 16])

    client = redis.Redis.from_url(redis_url)
    try:
        [raw] = client.lrange("revisioner", 0, -1)
    finally:
        client.close()
    envelope = json.loads(raw)
    assert (envelope["content-type"], envelope["content-encoding"]) == (
        "application/json", "utf-8")
    assert envelope["headers"] == json.loads(json.dumps(dict(sent.headers)))
    properties = envelope["properties"]
    assert properties["correlation_id"] == sent.id and properties["reply_to"] == web.oid
    assert properties["delivery_mode"] == webapp.PERSISTENT
    assert properties["delivery_info"] == {"exchange": "", "routing_key": "revisioner"}


def test_the_image_runs_what_the_web_app_sends(
        redis_url: str, metamapper_db: MetamapperDB, postgres_dsn: str,
        smtp_server: SmtpServer, start_worker: Callable[..., Process],
        process_env: Callable[..., dict[str, str]]) -> None:
    """Every helper of the scenario against a worker process of this image (no node)."""
    with psycopg.connect(postgres_dsn, autocommit=True) as datastore:
        datastore.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
    worker = start_worker(process_env(
        METAMAPPER_CELERY_BROKER_URL=redis_url, METAMAPPER_CELERY_RESULT_BACKEND=redis_url,
        METAMAPPER_EMAIL_BACKEND=SMTP_BACKEND, METAMAPPER_EMAIL_HOST=smtp_server.host,
        METAMAPPER_EMAIL_PORT=str(smtp_server.port), **metamapper_db.env), name="webapp")
    web = WebApp(redis_url)
    results = Celery("metamapper", backend=redis_url, set_as_current=False)
    settings = datastores.settings_from_url(postgres_dsn)
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "owner@example.org")
        workspace = workspaces.create_workspace(conn, "acme", "Acme", user)
        created = webapp.create_datastore(conn, web, user_id=user, user_email="owner@example.org",
                                          workspace_id=workspace.id, name="Shop",
                                          connection=settings)
        subject = webapp.membership_granted(web, "new@example.org", "Acme", "MEMBER", False)

        assert webapp.health(conn, web, results) == {
            "metastore": webapp.HEALTHY, "scheduler": webapp.UNHEALTHY,  # no beat here
            "worker": webapp.HEALTHY}
        assert finished_run(conn, created.run_id, 60) == RunView("SUCCESS", {
            "start_run": ["SUCCESS"], "revisioner": ["SUCCESS"], "complete_run": ["SUCCESS"]})
        assert catalog(conn, created.id) == {("public", "orders"): ("id", "note")}
        assert heartbeat(conn) is None  # no beat here
        audited = wait_until(lambda: conn.execute(
            "SELECT verb, target_object_id, extras FROM audit_activity").fetchall(), 30,
            what="the audit row")
        assert audited == [("created", created.id, {"datastore_id": created.id})]
    wait_until(lambda: smtp_server.mails, 30, what="the e-mail")
    assert [(m.recipients, m.message["Subject"]) for m in smtp_server.mails] == [
        (("new@example.org",), subject)]
    assert "unregistered" not in worker.log and "raised unexpected" not in worker.log
    results.close()
