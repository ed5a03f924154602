"""The Redis schedule store (``metamapper.beat:RedisScheduler``) across a killed beat.

Two real ``celery beat`` processes one after the other, as a failover runs them: the
first is killed (SIGKILL, no chance to save anything) right after it sent the entry, the
second starts later. With the schedule's state in Redis the second neither sends again
what the first sent nor waits a full interval for what came due while no beat ran.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.helpers import wait_until
from tests.tasks.conftest import BIN, Process

Env = Callable[..., dict[str, str]]
INTERVAL = 4.0
QUEUE = "store-ticks"


def start_beat(processes: Callable[..., Process], process_env: Env, redis_url: str,
               prefix: str, stamps: Path, name: str) -> Process:
    settings = {
        "beat_scheduler": "metamapper.beat:RedisScheduler",
        "redbeat_key_prefix": prefix,
        "beat_schedule": {"heartbeat": None, "store-tick": {
            "task": "store.tick", "schedule": INTERVAL, "options": {"queue": QUEUE}}},
    }
    stamps.mkdir(exist_ok=True)
    return processes(
        [str(BIN / "celery"), "--app", "metamapper", "beat", "-l", "info",
         "--schedule", str(stamps / "unused-schedule")],
        process_env(METAMAPPER_CELERY_BROKER_URL=redis_url, METAMAPPER_BEAT_REDIS_URL=redis_url,
                    METAMAPPER_PROBE_DIR=str(stamps),
                    METAMAPPER_CELERY_SETTINGS=json.dumps(settings)),
        name)


def sent(client: redis.Redis) -> int:
    return int(client.llen(QUEUE))


def test_a_new_beat_neither_repeats_nor_skips_what_the_killed_one_did(
        redis_url: str, tmp_path: Path, processes: Callable[..., Any],
        process_env: Env) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = f"test:{uuid.uuid4().hex[:8]}:beat:"
    first = start_beat(processes, process_env, redis_url, prefix, tmp_path / "a", "first")
    wait_until(lambda: sent(client) >= 2, timeout=60, interval=0.05, what="two ticks")
    before = sent(client)
    wait_until(lambda: sent(client) > before, timeout=2 * INTERVAL, interval=0.02,
               what="the next tick")
    last_sent_at = time.monotonic()
    first.stop(signal.SIGKILL)                          # right after a send
    count = sent(client)
    assert client.exists(f"{prefix}store-tick"), "the entry's state is not in Redis"

    # 1. A beat that starts at once does not send the entry again before it is due.
    second = start_beat(processes, process_env, redis_url, prefix, tmp_path / "b", "second")
    stamp = tmp_path / "b" / "metamapper-beat-live"
    wait_until(stamp.exists, timeout=60, interval=0.05, what="the second beat's first tick")
    wait_until(lambda: sent(client) > count, timeout=3 * INTERVAL + 30, interval=0.02,
               what="the second beat's first send")
    first_send_after = time.monotonic() - last_sent_at
    assert first_send_after >= INTERVAL - 0.5, (
        f"sent again {first_send_after:.1f} s after the killed beat's send")
    count = sent(client)
    last_sent_at = time.monotonic()
    second.stop(signal.SIGKILL)

    # 2. Due while no beat ran: the next beat sends it on its first tick, not an interval on.
    time.sleep(2 * INTERVAL)
    third = start_beat(processes, process_env, redis_url, prefix, tmp_path / "c", "third")
    stamp = tmp_path / "c" / "metamapper-beat-live"
    wait_until(stamp.exists, timeout=60, interval=0.02, what="the third beat's first tick")
    first_tick_at = time.monotonic()
    wait_until(lambda: sent(client) > count, timeout=INTERVAL, interval=0.02,
               what="the overdue entry sent on the first tick")
    catch_up = time.monotonic() - first_tick_at
    assert sent(client) == count + 1                    # once, not once per missed slot
    time.sleep(INTERVAL / 2)
    assert sent(client) == count + 1                    # and not doubled
    print(f"first send by a beat started at once: {first_send_after:.1f} s after the killed "
          f"beat's (interval {INTERVAL:.0f} s); an overdue entry sent {catch_up:.2f} s after "
          f"the new beat's first tick, {time.monotonic() - last_sent_at:.1f} s after the "
          "last send")
    third.stop()
    client.close()
