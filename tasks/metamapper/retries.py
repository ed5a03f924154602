"""The app's task class: a retry that could not be sent puts its message back.

``Task.retry`` sends the task again as a new message and, once that is sent, lets the
worker acknowledge the one it is running. When the new message cannot be sent (the
broker unreachable, or its name not resolving for the moment a new connection needs),
Celery rejects the running message *without* requeue (``celery/app/task.py``,
``Task.retry``: ``raise Reject(exc, requeue=False)``): with late acknowledgement, as
Metamapper runs, the broker drops it, and the task is gone with neither message left.
Here the running message is rejected *with* requeue instead: it goes back to its queue
(or, when the broker cannot hear the rejection either, stays unacknowledged and is
delivered again after the visibility timeout or the reconnect), so the task runs again
with the same retry count. A cluster DNS outage in the fault-injection soak lost a task
this way.
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.exceptions import Reject


class MetamapperTask(Task):
    """Celery's task, whose retry keeps its message when the retry cannot be sent."""

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().retry(*args, **kwargs)
        except Reject as rejected:   # only raised there when sending the retry failed
            raise Reject(rejected.reason, requeue=True) from rejected
