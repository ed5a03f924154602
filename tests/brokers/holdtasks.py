"""A task for the in-flight tests, loaded by the test workers through Celery's ``imports``.

``tests.brokers.hold(gate)`` marks itself started in the directory ``gate``, then
holds its worker process until the file ``gate/release`` exists, so a test decides
exactly how long messages stay delivered and unacknowledged.
"""

from __future__ import annotations

import time
from pathlib import Path

from celery import Task

from metamapper.celery import app

HOLD_LIMIT_SECONDS = 120


@app.task(name="tests.brokers.hold", bind=True)
def hold(self: Task, gate: str) -> None:
    directory = Path(gate)
    (directory / f"started-{self.request.id}").touch()
    deadline = time.monotonic() + HOLD_LIMIT_SECONDS
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
