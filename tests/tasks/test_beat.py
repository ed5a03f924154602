"""celery beat enqueues Metamapper's schedule; single-beat keeps exactly one beat running."""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from devenv.waiting import wait_until
from metamapper.defaults import BEAT_SCHEDULE, QUEUES
from metamapper_beat import DEFAULT_QUEUE, route, task_routes

BIN = Path(sys.executable).parent
Env = Callable[..., dict[str, str]]

HEARTBEAT = "app.healthchecks.tasks.heartbeat"
#: Beat sends the heartbeat every second instead of every minute.
FAST_HEARTBEAT = json.dumps({"beat_schedule": {"beat-scheduler-healthcheck": {"schedule": 1}}})


def queued_tasks(redis_url: str, queue: str) -> list[str]:
    """Names of the tasks waiting in a Redis queue."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


def test_beat_sends_each_of_upstreams_entries_to_its_queue(
    redis_url: str, tmp_path: Path, processes: Callable[..., Any], process_env: Env,
) -> None:
    """Every entry of the schedule, due every second here, reaches the queue upstream's
    routes name (no per-entry queue is given: the routes do it, as for upstream's beat)."""
    expected: dict[str, set[str]] = {queue: set() for queue in QUEUES}
    for entry in BEAT_SCHEDULE.values():
        expected[route(task_routes(), entry["task"], DEFAULT_QUEUE)].add(entry["task"])
    every_second = {name: {"schedule": 1} for name in BEAT_SCHEDULE}
    # A metastore named (beat never connects to it): without one beat sends the heartbeat only.
    env = process_env(METAMAPPER_CELERY_BROKER_URL=redis_url,
                      METAMAPPER_DB_HOST="metastore.example",
                      METAMAPPER_CELERY_SETTINGS=json.dumps({"beat_schedule": every_second}))
    processes(
        [str(BIN / "celery"), "--app", "metamapper", "beat", "-l", "info",
         "--schedule", str(tmp_path / "schedule")],
        env, "beat",
    )

    def sent() -> dict[str, set[str]] | None:
        found = {queue: set(queued_tasks(redis_url, queue)) for queue in QUEUES}
        return found if found == expected else None

    assert wait_until(sent, timeout=30) == expected
    assert len(expected["default"]) == 3 and len(expected["revisioner"]) == 3


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running_beats(scheduler_pid: int) -> int:
    """How many ``celery beat`` processes this single-beat process is running."""
    count = 0
    for child in _children(scheduler_pid):
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        count += b"beat" in argv
    return count


def test_single_beat_runs_exactly_one_beat_and_fails_over(
    redis_url: str, tmp_path: Path, processes: Callable[..., Any], process_env: Env,
) -> None:
    lock_time = 3
    identifier = f"metamapper-{uuid.uuid4().hex[:8]}"

    def scheduler(name: str) -> Any:
        env = process_env(
            METAMAPPER_BROKER_URL=redis_url,
            METAMAPPER_CELERY_SETTINGS=FAST_HEARTBEAT,
            METAMAPPER_BEAT_SCHEDULE=str(tmp_path / f"{name}-schedule"),
            SINGLE_BEAT_REDIS_SERVER=redis_url,
            SINGLE_BEAT_IDENTIFIER=identifier,
            SINGLE_BEAT_LOCK_TIME=str(lock_time),
            SINGLE_BEAT_HEARTBEAT_INTERVAL="1",
            SINGLE_BEAT_HOST_IDENTIFIER=name,
        )
        # The image's entrypoint command, as scheduler pods run it.
        return processes([sys.executable, "-m", "metamapper", "scheduler"], env, name)

    first = scheduler("first")
    wait_until(lambda: _running_beats(first.popen.pid) == 1)
    second = scheduler("second")
    lock = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 2 * lock_time
    while time.monotonic() < deadline:  # a few lock periods with both schedulers up
        assert (_running_beats(first.popen.pid), _running_beats(second.popen.pid)) == (1, 0)
        assert b":first:" in (lock.get(f"SINGLE_BEAT_{identifier}") or b"")
        time.sleep(0.25)
    wait_until(lambda: HEARTBEAT in queued_tasks(redis_url, "default"))

    killed_at = time.monotonic()
    first.stop(signal.SIGKILL)  # the node dies: no chance to release the lock
    wait_until(lambda: b":second:" in (lock.get(f"SINGLE_BEAT_{identifier}") or b""),
             timeout=lock_time + 15, interval=0.1)
    took = time.monotonic() - killed_at
    # The lock expires lock_time after its last refresh; the standby retries every
    # heartbeat interval (1 s); one more second for polling.
    assert took <= lock_time + 2, f"takeover after {took:.1f} s, lock time {lock_time} s"
    wait_until(lambda: _running_beats(second.popen.pid) == 1)
    lock.delete("default")
    wait_until(lambda: HEARTBEAT in queued_tasks(redis_url, "default"))
    lock.close()
