"""The workload's task that retries (the soak sends it): its first attempt records apart,
so the ledger's ``started`` and ``done`` count the attempt that works, once each."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devenv.workload import RETRIED, records

WORKLOAD = Path(__file__).resolve().parents[2] / "devenv" / "workload_image"


@pytest.fixture
def workload() -> Iterator[object]:
    sys.path.insert(0, str(WORKLOAD))
    try:
        import metamapper_workload
        yield metamapper_workload
    finally:
        sys.path.remove(str(WORKLOAD))


def test_retried_asks_for_one_retry_then_records_one_run(workload: object,
                                                         redis_url: str) -> None:
    from metamapper.celery import app

    task = app.tasks[RETRIED]
    app.conf.task_always_eager = True   # the retry runs at once, in this process
    try:
        task.apply(args=["t1", 0.01, redis_url]).get()
    finally:
        app.conf.task_always_eager = False
    assert len(records(redis_url, "retried", "t1")) == 1
    started, done = records(redis_url, "started", "t1"), records(redis_url, "done", "t1")
    assert len(started) == len(done) == 1
    assert started[0].pid == done[0].pid
