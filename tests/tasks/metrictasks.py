"""Tasks for the worker metrics test, loaded by the test worker through Celery's ``imports``.

``ok`` records the process that ran it (the pool's children must be summed), ``fail``
raises, ``retry_once`` asks to be retried once and then succeeds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Task

from metamapper.celery import app


@app.task(name="tests.metrics.ok")
def ok(record: str) -> None:
    time.sleep(0.3)  # long enough that both children of the pool take some
    Path(record, f"pid-{os.getpid()}").touch()


@app.task(name="tests.metrics.fail")
def fail() -> None:
    raise ValueError("this task fails on purpose")


@app.task(name="tests.metrics.retry_once", bind=True, default_retry_delay=0)
def retry_once(self: Task) -> None:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
