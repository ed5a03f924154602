"""Tasks that record what they did, for the demo, the end-to-end tests and the benchmarks.

Workers load this module through ``celery.settings.imports``. Each task appends a line to
the Redis list ``workload:started:<task id>`` when it starts and to
``workload:done:<task id>`` when it finishes, in the Redis database the caller names: a
task is lost when it never finished, ran twice when ``done`` has two lines, and was
interrupted (and delivered again) when it started more often than it finished. Each line
says when, on which pod (``HOSTNAME``) and in which process.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import redis

from metamapper.celery import app

WORK = "metamapper_workload.work"
HOG = "metamapper_workload.hog"
FLAKY = "metamapper_workload.flaky"
RETRIED = "metamapper_workload.retried"


def _record(record_url: str, stage: str, task_id: str) -> int:
    """Append a line to the task's ``stage`` list; how many lines it now has."""
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    client = redis.Redis.from_url(record_url)
    try:
        return int(client.rpush(f"workload:{stage}:{task_id}",
                                f"{time.time():.3f} {pod} {os.getpid()}"))
    finally:
        client.close()


@app.task(name=WORK)
def work(task_id: str, seconds: float, record_url: str) -> None:
    """Stand-in for a unit of real work that takes ``seconds``."""
    _record(record_url, "started", task_id)
    time.sleep(seconds)
    _record(record_url, "done", task_id)


@app.task(name=HOG)
def hog(task_id: str, megabytes: int, record_url: str) -> None:
    """On its first delivery, hold ``megabytes`` of memory for a while (more than the pod's
    limit: the runtime kills the process); on a redelivery, finish at once."""
    if _record(record_url, "started", task_id) == 1:
        held = [bytearray(1024 * 1024) for _ in range(megabytes)]
        time.sleep(30)
        del held
    _record(record_url, "done", task_id)


@app.task(name=RETRIED, bind=True, max_retries=1)
def retried(self: Any, task_id: str, seconds: float, record_url: str) -> None:
    """Asks to be retried once (a message the task itself sends, a second later), then
    works like ``work``. The first attempt records under ``retried`` only, so that
    ``started`` and ``done`` count the runs of the attempt that does the work."""
    if self.request.retries == 0:
        _record(record_url, "retried", task_id)
        raise self.retry(countdown=1)
    work(task_id, seconds, record_url)


@app.task(name=FLAKY, bind=True, max_retries=1)
def flaky(self: Any) -> None:
    """Asks to be retried on its first run and fails on the second: one retry (a message
    sent by a task) and one failure, for the worker metrics the demo shows."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    raise ValueError("the demo's task that fails on purpose")
