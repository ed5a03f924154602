"""The workload of the demo, the end-to-end tests and the benchmarks, seen from the host.

Its tasks run in the worker pods of the ``workload`` image (``devenv/workload_image``):
each records when it started and finished, on which pod and in which process, in a Redis
database of the caller's. This module names the tasks and reads those records.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

MODULE = "metamapper_workload"   # what a fleet's celery.settings.imports names
TASK = f"{MODULE}.work"          # (task id, seconds, record URL)
HOG = f"{MODULE}.hog"            # (task id, megabytes, record URL)
FLAKY = f"{MODULE}.flaky"        # no arguments: retried once, then fails
RETRIED = f"{MODULE}.retried"    # (task id, seconds, record URL): retried once, then works


@dataclass(frozen=True)
class Tally:
    sent: int
    done: int
    lost: int
    duplicated: int
    interrupted: int


@dataclass(frozen=True)
class Record:
    """One line of a task's record: when, on which pod, in which process."""

    at: float
    pod: str
    pid: int


def records(record_url: str, stage: str, task_id: str) -> list[Record]:
    """The ``started`` or ``done`` records of one task, oldest first."""
    client = redis.Redis.from_url(record_url, decode_responses=True)
    try:
        lines = client.lrange(f"workload:{stage}:{task_id}", 0, -1)
    finally:
        client.close()
    return [Record(float(at), pod, int(pid))
            for at, pod, pid in (str(line).split() for line in lines)]


def _counts(record_url: str, stage: str, task_ids: list[str]) -> list[int]:
    client = redis.Redis.from_url(record_url)
    try:
        pipe = client.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.llen(f"workload:{stage}:{task_id}")
        return [int(n) for n in pipe.execute()]
    finally:
        client.close()


def tally(record_url: str, task_ids: list[str]) -> Tally:
    started = _counts(record_url, "started", task_ids)
    done = _counts(record_url, "done", task_ids)
    return Tally(
        sent=len(task_ids),
        done=sum(1 for n in done if n),
        lost=sum(1 for n in done if not n),
        duplicated=sum(1 for n in done if n > 1),
        interrupted=sum(1 for s, d in zip(started, done, strict=True) if s > d),
    )
