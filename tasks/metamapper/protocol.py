"""Metamapper 1.0's task protocol: every task name its web app and beat send, as data.

This table is the single source for what the worker registers under upstream's names,
for the routes, and for the table in ``docs/worker.md`` (a test compares them).

Each entry is an :class:`UpstreamTask`:

- ``name``: the exact registered name (Celery derives upstream's from the module and
  function, e.g. ``app.revisioner.tasks.v1.core.start_run``);
- ``signature``: a function with upstream's exact parameters (names, order, defaults,
  trailing ``*args, **kwargs``): a test holds every implementation to it, and the docs
  print it;
- ``outcome``: what this image does with the message, :class:`Outcome`;
- ``module``: the module that registers the implementation under that name, or
- ``refusal``: why this image cannot perform it here. A refused name is still
  registered, by :mod:`metamapper.refusals`, and fails loudly (an error line, a failed
  task in the metrics, the message rejected without requeue).

To implement a refused name: register the task under its name in a module of yours and
replace the entry's ``refusal`` with ``module`` (``implemented(...)`` below).

Routes are upstream's rules (``metamapper_beat.ROUTES``): ``app.revisioner.tasks.*`` to
``revisioner``, ``app.checks.tasks.*`` to ``checks``, ``app.definitions.tasks.usage.*``
to ``usage``, the rest to ``default``. They live beside the beat schedule in
:mod:`metamapper_beat`, where the operator reads them too.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metamapper_beat import DEFAULT_QUEUE, route, task_routes


class Outcome(enum.Enum):
    """What this image does with an upstream message (the words of docs/worker.md)."""

    SAME = "same effect"
    BETTER = "better"
    REFUSED = "fails loudly"


class _FromAddress:
    """Upstream's default sender: its setting ``EMAIL_DEFAULT_FROM``, read at import."""

    def __repr__(self) -> str:
        return "METAMAPPER_EMAIL_FROM_ADDRESS"


#: The default of ``deliver``'s ``from_email`` (see :class:`_FromAddress`).
DEFAULT_FROM = _FromAddress()


@dataclass(frozen=True)
class UpstreamTask:
    name: str
    signature: Callable[..., Any]
    outcome: Outcome
    module: str | None = None
    refusal: str | None = None

    def __post_init__(self) -> None:
        if (self.module is None) == (self.refusal is None):
            raise ValueError(f"{self.name}: give either the module or the refusal")
        # An implementation may itself fail loudly for the messages it cannot perform.
        if self.refusal is not None and self.outcome is not Outcome.REFUSED:
            raise ValueError(f"{self.name}: a task with a refusal fails loudly")

    @property
    def parameters(self) -> inspect.Signature:
        return inspect.signature(self.signature)

    @property
    def queue(self) -> str:
        return route(task_routes(), self.name, DEFAULT_QUEUE)


def implemented(name: str, signature: Callable[..., Any], module: str,
                outcome: Outcome = Outcome.SAME) -> UpstreamTask:
    return UpstreamTask(name, signature, outcome, module=module)


def refused(name: str, signature: Callable[..., Any], why: str) -> UpstreamTask:
    return UpstreamTask(name, signature, Outcome.REFUSED, refusal=why)


_ELASTICSEARCH = "this image has no Elasticsearch client: the search index is not updated"
_SSO = "this image does not verify SSO domains (no DNS TXT lookups from workers)"
_USAGE = "metamapper.usage.tasks"

TASKS: tuple[UpstreamTask, ...] = (
    implemented(
        "app.audit.tasks.audit",
        lambda actor_id, workspace_id, verb, old_values, new_values, extras=None,
        target_object_id=None, target_content_type_id=None, action_object_object_id=None,
        action_object_content_type_id=None: None,
        "metamapper.upstream.audit",
    ),
    implemented(
        "app.authentication.tasks.hard_delete_workspace",
        lambda workspace_id, *args, **kwargs: None,
        "metamapper.upstream.deletes",
    ),
    implemented(
        "app.checks.tasks.core.execute_check", lambda check_id, epoch: None,
        "metamapper.checks.tasks", Outcome.BETTER,
    ),
    implemented(
        "app.checks.tasks.core.dispatch_alerts", lambda check_id, epoch: None,
        "metamapper.checks.tasks", Outcome.BETTER,
    ),
    implemented(
        "app.checks.tasks.scheduler.create_executions",
        lambda countdown_in_minutes=0: None, "metamapper.checks.tasks",
    ),
    implemented(
        "app.definitions.tasks.core.hard_delete_datastore",
        lambda datastore_id, *args, **kwargs: None,
        "metamapper.upstream.deletes",
    ),
    implemented(
        "app.definitions.tasks.usage.queue_table_usage_jobs",
        lambda countdown_in_minutes=0: None, _USAGE, Outcome.BETTER,
    ),
    implemented(
        "app.definitions.tasks.usage.get_query_history_results",
        lambda datastore_id, start_date, end_date: None, _USAGE, Outcome.BETTER,
    ),
    implemented(
        "app.definitions.tasks.usage.set_usage_from_query_text",
        lambda datastore_id, execution_date, db_name, db_user, db_schema, query_text,
        query_count: None,
        _USAGE,
    ),
    implemented(
        "app.definitions.tasks.usage.delete_table_usage_older_than_90_days",
        lambda *args, **kwargs: None, _USAGE,
    ),
    implemented(
        "app.definitions.tasks.usage.update_table_usage_metrics",
        lambda datastore_id: None, _USAGE,
    ),
    implemented(
        "app.healthchecks.tasks.heartbeat", lambda: None, "metamapper.upstream.healthchecks",
    ),
    implemented(
        "app.healthchecks.tasks.add", lambda x, y: None, "metamapper.upstream.healthchecks",
    ),
    implemented(
        "app.notifications.tasks.deliver",
        lambda namespace, template, subject, to_email, from_email=DEFAULT_FROM,
        template_dict=None: None,
        "metamapper.notify.tasks",
    ),
    refused(
        "app.omnisearch.tasks.update_single_es_object",
        lambda index_name, instance_id: None, _ELASTICSEARCH,
    ),
    refused(
        "app.omnisearch.tasks.remove_single_es_object",
        lambda index_name, instance_id: None, _ELASTICSEARCH,
    ),
    implemented(
        "app.revisioner.tasks.v1.core.start_run", lambda run_id: None,
        "metamapper.revisioner.core", Outcome.BETTER,
    ),
    implemented(
        "app.revisioner.tasks.v1.core.process_schema", lambda run_task_id: None,
        "metamapper.revisioner.core", Outcome.BETTER,
    ),
    implemented(
        "app.revisioner.tasks.v1.core.complete_run", lambda run_id, **kwargs: None,
        "metamapper.revisioner.core", Outcome.BETTER,
    ),
    implemented(
        "app.revisioner.tasks.v1.core.alert_incident_contacts",
        lambda datastore_id, status: None, "metamapper.revisioner.core",
    ),
    implemented(
        "app.revisioner.tasks.v1.scheduler.create_runs",
        lambda datastore_slug=None, *args, **kwargs: None, "metamapper.revisioner.scheduler",
        Outcome.BETTER,
    ),
    implemented(
        "app.revisioner.tasks.v1.scheduler.queue_runs",
        lambda datastore_slug=None, countdown_in_minutes=15, *args, **kwargs: None,
        "metamapper.revisioner.scheduler", Outcome.BETTER,
    ),
    implemented(
        "app.revisioner.tasks.v1.scheduler.detect_run_timeouts",
        lambda minutes=60, *args, **kwargs: None, "metamapper.revisioner.scheduler",
        Outcome.BETTER,
    ),
    implemented(
        "app.revisioner.tasks.v1.version.check_version", lambda datastore_id: None,
        "metamapper.revisioner.version",
    ),
    implemented(
        "app.sso.tasks.queue_domain_verifications", lambda *arg, **kwargs: None,
        "metamapper.upstream.sso", Outcome.REFUSED,
    ),
    refused("app.sso.tasks.verify_domain", lambda domain, *arg, **kwargs: None, _SSO),
    implemented(
        "app.sso.tasks.delete_failed_domains", lambda *arg, **kwargs: None,
        "metamapper.upstream.sso",
    ),
    refused(
        "metamapper.tasks.send_beacon", lambda: None,
        "this image never sends usage beacons to a remote server",
    ),
)

def modules() -> tuple[str, ...]:
    """The modules that register implementations, each once, in the table's order."""
    return tuple(dict.fromkeys(task.module for task in TASKS if task.module))
