"""Metamapper 1.0's messages: every upstream task name is registered with upstream's
parameters and routes, and a message this image cannot perform fails loudly.

The web app's side is played by a plain Celery app with upstream's routes, sending with
``send_task`` (what ``.delay`` and ``.apply_async`` send: name, args, kwargs, queue)."""

from __future__ import annotations

import inspect
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
from celery import Celery

from devenv import services
from devenv.controlplane import free_port
from devenv.scrape import scrape, total
from devenv.waiting import wait_until
from metamapper import protocol
from metamapper.celery import app
from metamapper.metastore import open_metastore, workspaces
from metamapper.refusals import Refusal
from tests.conftest import REPO
from tests.tasks.conftest import MetamapperDB

Env = Callable[..., dict[str, str]]

#: Upstream's metamapper/celery.py, as its web app and beat route (copied as data).
UPSTREAM_ROUTES = {
    "app.checks.tasks.*": {"queue": "checks"},
    "app.revisioner.tasks.*": {"queue": "revisioner"},
    "app.definitions.tasks.usage.*": {"queue": "usage"},
}
REFUSED = "app.omnisearch.tasks.update_single_es_object"


@pytest.fixture(scope="module", autouse=True)
def _tasks_imported() -> None:
    app.loader.import_default_modules()


@contextmanager
def web_app(broker_url: str, backend: str | None = None) -> Iterator[Celery]:
    """A sender configured as upstream's web app is (default queue ``default``)."""
    sender = Celery("metamapper", broker=broker_url, backend=backend, set_as_current=False)
    sender.conf.update(task_default_queue="default", task_routes=UPSTREAM_ROUTES,
                       task_serializer="json", accept_content=["json"])
    try:
        yield sender
    finally:
        sender.close()


def test_the_table_holds_upstreams_28_task_names() -> None:
    names = [task.name for task in protocol.TASKS]
    assert len(names) == len(set(names)) == 28
    assert all(re.fullmatch(r"(app|metamapper)\.[a-z0-9_.]+", name) for name in names)


@pytest.mark.parametrize("task", protocol.TASKS, ids=lambda task: task.name)
def test_every_upstream_name_is_registered_and_routed_as_upstream_routes_it(
    task: protocol.UpstreamTask,
) -> None:
    registered = app.tasks[task.name]
    if task.refusal is None:
        assert type(registered).__module__ == task.module
    else:
        assert isinstance(registered, Refusal)
        assert registered.reason == task.refusal
    expected = next((route["queue"] for glob, route in UPSTREAM_ROUTES.items()
                     if re.fullmatch(glob.replace(".", r"\.").replace("*", ".*"), task.name)),
                    "default")
    assert app.amqp.router.route({}, task.name)["queue"].name == task.queue == expected


def _shape(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("task", [t for t in protocol.TASKS if t.refusal is None],
                         ids=lambda task: task.name)
def test_an_implementation_takes_upstreams_exact_parameters(task: protocol.UpstreamTask) -> None:
    assert _shape(inspect.signature(app.tasks[task.name].run)) == _shape(task.parameters)


def test_docs_list_every_name_with_what_this_image_does() -> None:
    text = (REPO / "docs" / "worker.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9_.]+)` \| `(\([^`]*\))` \| (\w+) \| ([a-z ]+) \|",
                      text, re.MULTILINE)
    assert rows == [(task.name, str(task.parameters), task.queue, task.outcome.value)
                    for task in protocol.TASKS]


def test_upstream_messages_are_executed_or_fail_loudly_on_redis(
    redis_url: str, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
    process_env: Env, tmp_path: Path,
) -> None:
    port = free_port()
    backend = redis_url  # results beside the queues, in the test's own database
    multiproc = tmp_path / "metrics"
    env = process_env(
        METAMAPPER_CELERY_BROKER_URL=redis_url, METAMAPPER_CELERY_RESULT_BACKEND=backend,
        METAMAPPER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        **metamapper_db.env,
    )
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "ada@example.com")
        workspace = workspaces.create_workspace(conn, "analytics", "Analytics", user).id
    worker = start_worker(env, name="protocol")
    with web_app(redis_url, backend) as sender:
        # The /health view's worker check, as the web app sends it.
        assert sender.send_task("app.healthchecks.tasks.add", args=[4, 4],
                                expires=30).get(timeout=30) == 8
        # The web app's audit decorator: actor and workspace by position, the rest by name.
        audited = sender.send_task("app.audit.tasks.audit", args=[user, workspace], kwargs={
            "verb": "updated", "old_values": {"readme": ""}, "new_values": {"readme": "x"},
            "target_object_id": 7, "target_content_type_id": None})
        assert isinstance(audited.get(timeout=30), int)
        sender.send_task(REFUSED, kwargs={"index_name": "table", "instance_id": 42})

    def counted() -> float:
        return total(scrape(f"http://127.0.0.1:{port}/metrics"), "celery_task_failed_total",
                     name=REFUSED, exception="Refused")

    assert wait_until(counted) == 1
    errors = [line for line in worker.log.splitlines() if "cannot run here" in line]
    assert len(errors) == 1 and "ERROR" in errors[0] and REFUSED in errors[0]
    assert "Elasticsearch" in errors[0]
    assert "unregistered task" not in worker.log.lower()
    with open_metastore() as conn:
        assert conn.execute("SELECT verb, new_values FROM audit_activity").fetchall() == [
            ("updated", {"readme": "x"})]
    # Rejected without requeue: not delivered again, nothing left behind.
    client = redis.Redis.from_url(redis_url)
    assert client.llen("default") == 0 and client.hlen("unacked") == 0
    client.close()


def test_a_refused_message_reaches_rabbitmqs_dead_letter_exchange(
    rabbitmq: Any, start_worker: Callable[..., Any], process_env: Env,
) -> None:
    """With RabbitMQ a rejected message goes where the queue's policy sends dead letters."""
    services.rabbitmq_api("PUT", f"policies/{rabbitmq.vhost}/dead-letters", {
        "pattern": "^default$", "apply-to": "queues",
        "definition": {"dead-letter-exchange": "dead-letters"},
    })
    dead = kombu.Queue("dead", kombu.Exchange("dead-letters", type="fanout"))
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        dead.declare(channel=connection.default_channel)
    start_worker(process_env(METAMAPPER_CELERY_BROKER_URL=rabbitmq.amqp_url), name="dlx")
    task_id = str(uuid.uuid4())
    with web_app(rabbitmq.amqp_url) as sender:
        sender.send_task("app.sso.tasks.verify_domain", args=["example.com"], task_id=task_id)

    def dead_letter() -> kombu.Message | None:
        with kombu.Connection(rabbitmq.amqp_url) as connection:
            message: kombu.Message | None = dead.bind(connection.default_channel).get(
                no_ack=True)
        return message

    message = wait_until(dead_letter)
    assert message.headers["task"] == "app.sso.tasks.verify_domain"
    assert message.headers["id"] == task_id
    assert json.loads(message.body)[0] == ["example.com"]
