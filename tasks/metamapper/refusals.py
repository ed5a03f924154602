"""Upstream task names this image cannot perform here: registered, and failing loudly.

Without a registration, a worker logs "Received unregistered task" and drops the
message. A refused name (:mod:`metamapper.protocol`, an entry with a ``refusal``) is
registered instead, as a :class:`Refusal`, which when it receives a message:

- logs one error line naming the task and why it cannot run here;
- raises ``Refused`` (a Celery ``Reject``) without requeue: Celery counts that as a
  failed task (the ``task_failure`` signal, so ``celery_task_failed_total`` with
  ``exception="Refused"``, a ``task-failed`` event, a FAILURE state on a result backend)
  and rejects the message.

What becomes of a rejected message depends on the broker. RabbitMQ hands it to the
queue's dead-letter exchange when one is set (a policy with ``dead-letter-exchange``),
else discards it; Redis and SQS (kombu's transports) remove it, so there the error line,
the metric and the event are its record.

This module is imported last by the app: it first imports every module the table names
as an implementation, then registers a refusal only for names still unregistered, so an
implementation always wins over its refusal.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, NoReturn

from celery import Celery, Task
from celery.exceptions import Reject

from metamapper import protocol
from metamapper.celery import app

logger = logging.getLogger(__name__)


class Refusal(Task):
    """A registered upstream name whose work this image does not do."""

    reason: str = ""
    # The message must still be unacknowledged when it is rejected.
    acks_late = True


def refuse(name: str, reason: str) -> NoReturn:
    """Fail the running task ``name`` loudly; also for an implementation that finds a
    message it cannot perform (e.g. usage of a Snowflake datastore)."""
    logger.error("%s cannot run here: %s; its message is rejected, not requeued", name, reason)
    raise Refused(f"{name} cannot run here: {reason}", requeue=False)


def _refuse(self: Refusal, *args: Any, **kwargs: Any) -> None:
    refuse(self.name, self.reason)


class Refused(Reject):
    """The rejection :func:`refuse` raises (Celery handles it as any ``Reject``)."""


class _QuietRejects(logging.Filter):
    """Drop Celery's own warning for a refusal's rejection: its traceback says nothing
    the refusal's error line has not said (and it would make two lines of one event)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Refused))


def register(celery: Celery) -> None:
    for module in protocol.modules():
        importlib.import_module(module)
    for task in protocol.TASKS:
        if task.refusal is not None and task.name not in celery.tasks:
            celery.task(name=task.name, base=Refusal, bind=True, reason=task.refusal)(_refuse)


register(app)
logging.getLogger("celery.app.trace").addFilter(_QuietRejects())
