"""The checks' Celery tasks, under upstream's names (queue ``checks`` by its routes).

- ``app.checks.tasks.scheduler.create_executions(countdown_in_minutes=0)``: the beat's,
  every minute; each new execution's ``execute_check`` is sent with a random countdown
  of up to ``countdown_in_minutes`` minutes (none by default), as upstream spreads them.
- ``app.checks.tasks.core.execute_check(check_id, epoch)``: runs the execution, then
  sends ``dispatch_alerts`` with the same arguments (not for a check just disabled).
- ``app.checks.tasks.core.dispatch_alerts(check_id, epoch)``: alerts the due rules; a
  rule that could not be alerted fails the task after the others were tried.

A metastore that cannot be reached is retried with a growing delay (the execution would
otherwise stay pending for good); the datastore's own errors are the execution's.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from metamapper.celery import app
from metamapper.checks import alerts, execution, store
from metamapper.metastore import datastores
from metamapper.metastore.connection import (
    MetastoreNotConfigured,
    MetastoreUnavailable,
    open_metastore,
)
from metamapper.metastore.fernet import Cipher
from metamapper.notify import MailSettings

# No metastore configured is not a pause to wait out: it fails at once.
RETRY = {"autoretry_for": (MetastoreUnavailable,),
         "dont_autoretry_for": (MetastoreNotConfigured,), "retry_backoff": 10,
         "retry_backoff_max": 300, "max_retries": 8}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AlertsFailed(Exception):
    """Some of an execution's alerts were not sent (each named, no credential)."""


@app.task(name="app.checks.tasks.scheduler.create_executions", **RETRY)
def create_executions(countdown_in_minutes: int = 0) -> int:
    with open_metastore() as conn:
        created = store.create_due_executions(conn, utcnow())
    for key in created:
        execute_check.apply_async(
            args=[key.check_id, key.epoch],
            countdown=random.randint(0, 60 * int(countdown_in_minutes)),
        )
    return len(created)


@app.task(name="app.checks.tasks.core.execute_check", **RETRY)
def execute_check(check_id: str, epoch: int) -> dict[str, Any]:
    with open_metastore() as conn:
        def datastore_url(datastore_id: str) -> str:
            return datastores.load(conn, datastore_id).connection.url()

        report = execution.execute(conn, check_id, int(epoch), datastore_url=datastore_url,
                                   clock=utcnow)
    if report.ran:
        dispatch_alerts.apply_async(args=[check_id, epoch])
    return {"fails": report.fails, "error": report.error}


@app.task(name="app.checks.tasks.core.dispatch_alerts", **RETRY)
def dispatch_alerts(check_id: str, epoch: int) -> list[int]:
    with open_metastore() as conn:
        sender = alerts.Sender(conn, Cipher.from_env(), MailSettings.from_environ())
        done = alerts.dispatch(sender, check_id, int(epoch), utcnow())
    if done.errors:
        raise AlertsFailed("; ".join(done.errors))
    return list(done.alerted)
