"""Metamapper 1.0's web app, as the worker fleet sees it: the rows it writes, the task
messages it sends, and its ``/health`` view.

The messages are what upstream's web app (Celery 4.4.6) publishes, header for header:
task protocol 2 with Celery 4.4's fourteen headers (none of the ones Celery 5 added),
JSON, persistent, published to the default exchange with the queue's name as routing key
(how Celery 4 publishes to a direct queue its routes name), declaring the queue as
upstream's ``task_queues`` declares it. Their names, arguments and options are upstream's
callers' own:

- ``app/definitions/serializers.py`` (a datastore created): a run row, then
  ``start_run.apply_async(args=[run.id])``, then the audit decorator's
  ``audit.delay(user.pk, workspace.pk, verb=..., old_values={}, new_values={},
  target_object_id=..., target_content_type_id=..., extras={"datastore_id": ...})``;
- ``app/authorization/emails.py``: ``deliver.delay(namespace=..., template=..., subject=...,
  to_email=..., template_dict=...)``;
- ``app/healthchecks/views.py``: ``add.apply_async(args=[4, 4], expires=3)``, then
  ``result.get(timeout=3)`` on the result backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu
import psycopg
from celery import Celery
from celery.app.routes import MapRoute
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr

from metamapper.metastore import datastores

#: Upstream's ``task_routes`` (metamapper/celery.py), in its order.
UPSTREAM_ROUTES: dict[str, dict[str, str]] = {
    "app.checks.tasks.*": {"queue": "checks"},
    "app.revisioner.tasks.*": {"queue": "revisioner"},
    "app.definitions.tasks.usage.*": {"queue": "usage"},
}
#: Upstream's ``task_default_queue``.
DEFAULT_QUEUE = "default"

#: The headers of a Celery 4.4 task message (protocol 2), in the order it writes them.
CELERY_4_HEADERS = ("lang", "task", "id", "shadow", "eta", "expires", "group", "retries",
                    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin")
#: Celery 4.4's ``argsrepr_maxsize`` and ``kwargsrepr_maxsize``.
REPR_MAXSIZE = 1024
#: AMQP's persistent delivery mode, Celery's default for every queue.
PERSISTENT = 2

START_RUN = "app.revisioner.tasks.v1.core.start_run"
AUDIT = "app.audit.tasks.audit"
DELIVER = "app.notifications.tasks.deliver"
ADD = "app.healthchecks.tasks.add"

HEALTHY, UNHEALTHY, NOT_CONFIGURED = "healthy", "unhealthy", "not_configured"
#: The /health view's worker check: the message expires, and the result is awaited, 3 s.
WORKER_CHECK_SECONDS = 3
#: A heartbeat younger than this is a healthy scheduler (upstream's Heartbeat.status).
HEARTBEAT_MAX_AGE = timedelta(minutes=3)


def queue_of(name: str) -> str:
    """The queue upstream's routes send ``name`` to (Celery's own glob routing)."""
    route = MapRoute(UPSTREAM_ROUTES)(name)
    return str(route["queue"]) if route else DEFAULT_QUEUE


@dataclass(frozen=True)
class TaskMessage:
    """One task message as Celery 4.4.6's ``amqp.as_task_v2`` makes it."""

    queue: str
    headers: Mapping[str, Any]
    properties: Mapping[str, str]  # correlation_id, reply_to
    body: tuple[Sequence[Any], Mapping[str, Any], Mapping[str, Any]]

    @property
    def id(self) -> str:
        return str(self.headers["id"])

    @property
    def name(self) -> str:
        return str(self.headers["task"])


def task_message(name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 *, expires: float | None = None, task_id: str, reply_to: str, origin: str,
                 now: datetime) -> TaskMessage:
    """The message ``Task.apply_async(args, kwargs, expires=...)`` sends from the web app.

    ``args`` keeps its type: ``apply_async(args=[...])`` passes a list and ``.delay(*args)``
    a tuple, which only the ``argsrepr`` header tells apart.
    """
    kwargs = dict(kwargs or {})
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None if expires is None else (now + timedelta(seconds=expires)).isoformat(),
        "group": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": saferepr(args, REPR_MAXSIZE),
        "kwargsrepr": saferepr(kwargs, REPR_MAXSIZE),
        "origin": origin,
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return TaskMessage(queue=queue_of(name), headers=headers,
                       properties={"correlation_id": task_id, "reply_to": reply_to},
                       body=(args, kwargs, embed))


def upstream_queue(name: str) -> kombu.Queue:
    """A queue as upstream's ``task_queues`` declares it (a direct exchange of its name)."""
    return kombu.Queue(name, kombu.Exchange(name), routing_key=name)


class WebApp:
    """The web app's side of the broker: publishes its messages as Celery 4.4.6 does."""

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.origin = anon_nodename()
        self.oid = str(uuid.uuid4())  # the app's id, which its messages' reply_to carries
        self.sent: list[TaskMessage] = []

    def message(self, name: str, args: Sequence[Any] = (),
                kwargs: Mapping[str, Any] | None = None,
                expires: float | None = None) -> TaskMessage:
        return task_message(name, args, kwargs, expires=expires, task_id=str(uuid.uuid4()),
                            reply_to=self.oid, origin=self.origin, now=datetime.now(UTC))

    def send(self, name: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None,
             expires: float | None = None) -> TaskMessage:
        message = self.message(name, args, kwargs, expires)
        publish(self.broker_url, message)
        self.sent.append(message)
        return message


def publish(broker_url: str, message: TaskMessage) -> None:
    """What Celery 4.4.6's ``send_task_message`` hands kombu for a routed task."""
    with kombu.Connection(broker_url) as connection:
        connection.Producer().publish(
            message.body, exchange="", routing_key=message.queue, serializer="json",
            delivery_mode=PERSISTENT, declare=[upstream_queue(message.queue)],
            headers=dict(message.headers), retry=True, **message.properties)


# --- what the web app does ----------------------------------------------------------------

@dataclass(frozen=True)
class CreatedDatastore:
    id: str
    run_id: str


def content_type_id(conn: psycopg.Connection, app_label: str, model: str) -> int:
    """Django's content type of a model, created on first use as Django creates it."""
    conn.execute("INSERT INTO django_content_type (app_label, model) VALUES (%s, %s)"
                 " ON CONFLICT (app_label, model) DO NOTHING", (app_label, model))
    row = conn.execute("SELECT id FROM django_content_type WHERE app_label = %s AND model = %s",
                       (app_label, model)).fetchone()
    assert row is not None
    return int(row[0])


def create_datastore(conn: psycopg.Connection, web: WebApp, *, user_id: int, user_email: str,
                     workspace_id: str, name: str,
                     connection: datastores.ConnectionSettings) -> CreatedDatastore:
    """The web app's ``DatastoreSerializer.create``: the datastore (its creator its incident
    contact) and its first run in one transaction, the run's ``start_run``, and the audit.

    The web app sends ``start_run`` inside its transaction, just before the commit; here
    it follows the commit, so that the scenario does not hang on that race (a worker that
    takes the message first finds no run and drops it).
    """
    with conn.transaction():
        datastore_id = datastores.register(conn, workspace_id, name, connection,
                                           incident_contacts=[user_email])
        run_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO revisioner_run (id, created_at, started_at, datastore_id,"
            " workspace_id, tasks_count, fails_count) VALUES (%s, now(), now(), %s, %s, 0, 0)",
            (run_id, datastore_id, workspace_id))
    web.send(START_RUN, args=[run_id])
    web.send(AUDIT, (user_id, workspace_id), {
        "verb": "created", "old_values": {}, "new_values": {},
        "target_object_id": datastore_id,
        "target_content_type_id": content_type_id(conn, "definitions", "datastore"),
        "extras": {"datastore_id": datastore_id},
    })
    return CreatedDatastore(datastore_id, run_id)


def membership_granted(web: WebApp, to_email: str, workspace_name: str, permissions: str,
                       user_exists: bool) -> str:
    """``app.authorization.emails.membership_granted``: the e-mail's subject."""
    permissions = permissions.lower().capitalize()
    subject = f"You have granted the {permissions} role to the {workspace_name} workspace"
    web.send(DELIVER, kwargs={
        "namespace": "authorization", "template": "membership_granted", "subject": subject,
        "to_email": to_email, "template_dict": {
            "to_address": to_email, "workspace_name": workspace_name,
            "user_exists": user_exists, "permissions": permissions,
        },
    })
    return subject


def health(conn: psycopg.Connection, web: WebApp, results: Celery | None) -> dict[str, str]:
    """``GET /health``: each check's status, as upstream's view decides it (``results``:
    the web app's Celery app on its result backend, None without one)."""
    metastore = conn.execute("SELECT id FROM django_content_type ORDER BY id LIMIT 1").fetchone()
    beat = conn.execute("SELECT ts FROM healthchecks_heartbeat ORDER BY ts LIMIT 1").fetchone()
    scheduler = UNHEALTHY
    if beat is not None and datetime.now(UTC) - beat[0] < HEARTBEAT_MAX_AGE:
        scheduler = HEALTHY
    return {"metastore": HEALTHY if metastore else UNHEALTHY, "scheduler": scheduler,
            "worker": worker_check(web, results)}


def worker_check(web: WebApp, results: Celery | None) -> str:
    if results is None:
        return NOT_CONFIGURED
    sent = web.send(ADD, args=[4, 4], expires=WORKER_CHECK_SECONDS)
    try:
        healthy = results.AsyncResult(sent.id).get(timeout=WORKER_CHECK_SECONDS) == 8
    except Exception:  # upstream's view: any failure is an unhealthy worker
        healthy = False
    return HEALTHY if healthy else UNHEALTHY
