"""The app's task class: a retry that could not be sent for want of the broker puts its
message back.

``Task.retry`` sends the task again as a new message and, once that is sent, lets the
worker acknowledge the one it is running. When the new message cannot be sent, Celery
rejects the running message *without* requeue (celery 5.7, ``Task.retry``: any
exception of ``apply_async`` becomes ``Reject(exc, requeue=False)``): with late
acknowledgement, as Metamapper runs, the broker drops it, and the task is gone with
neither message left. A cluster DNS outage in the fault-injection soak lost a task so.

Here that one reject is turned into a requeue, and only when all of these hold:

- Celery's ``Task.retry`` raised it itself, that is the retry's publication failed (not
  a ``Reject`` the task passed as ``exc`` and Celery re-raised once retries ran out);
- the publication failed for want of the broker: kombu's ``OperationalError`` (what
  Celery makes of the transport's connection errors) caused by a connection error of
  the app's transport, or such an error itself (refused, reset, a name not resolving).
  A message that cannot be encoded, arguments the task does not take, a broker that
  answers with an error (Redis out of memory) would fail alike on every delivery: a
  requeue would run the task's body again and again, its retry count never growing;
- the task is acknowledged late: otherwise its message was acknowledged on receipt,
  nothing is put back, and Celery's reject at least records the failure.

The message goes back to its queue (or, when the broker cannot hear the rejection
either, stays unacknowledged and is delivered again after the visibility timeout or the
reconnect), and the task runs again with the same retry count. Each requeue is logged
(WARNING) and counted (``metamapper_task_retry_requeued_total``), so an outage that
keeps a task going round shows. A publication that reached the broker but whose
confirmation was lost counts as failed: the task then runs twice, once from each
message, which at-least-once delivery allows and Metamapper's tasks must bear anyway.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError

from metamapper import metrics
from metamapper_urls import redact_text

logger = logging.getLogger(__name__)


def _raised_by_celerys_retry(rejected: Reject) -> bool:
    """Whether ``Task.retry`` itself raised it: the only reject it raises, the failed send."""
    traceback = rejected.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback is not None and traceback.tb_frame.f_code is Task.retry.__code__


def _broker_unreachable(error: object, connection_errors: tuple[type[BaseException], ...]) -> bool:
    if isinstance(error, OperationalError):
        cause = error.__cause__
        return cause is None or isinstance(cause, connection_errors)
    return isinstance(error, connection_errors)


class MetamapperTask(Task):
    """Celery's task, whose retry keeps its message when the broker cannot take the retry."""

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().retry(*args, **kwargs)
        except Reject as rejected:
            if not (rejected.requeue is False and self.acks_late
                    and _raised_by_celerys_retry(rejected)
                    and _broker_unreachable(rejected.reason, self._connection_errors())):
                raise
            logger.warning("Task %s[%s]: its retry could not be sent (%s); the message it "
                           "runs is requeued and the task will run again", self.name,
                           self.request.id, redact_text(str(rejected.reason)))
            metrics.retry_requeued.labels(self.name).inc()
            raise Reject(rejected.reason, requeue=True) from rejected

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        with self.app.connection_for_write() as connection:
            return tuple(connection.connection_errors)
