"""Beat across a failover on real pods: the schedule's state in Redis, the Standalone mode
through the image's entrypoint, and the figures (takeover, missed and doubled ticks).

An entry sends a task every 2 s to a queue no pool consumes; the queue's length is sampled
every 0.1 s, so each increase is a tick, timed. Definitions (docs/metamapper-resource.md's too):

- **doubled**: two ticks less than half an interval apart (one due time sent twice);
- **missed**: interval slots with no tick. While no beat runs (from the kill until the new
  beat's first send) the due times pass unsent; the new beat sends the entry once on
  starting and carries on every 2 s (Celery runs a late interval entry once, not once per
  slot). Those slots are the failover's cost and are reported; a slot missed anywhere
  else is a defect.

The failover is every gap between ticks that overlaps the time from the kill until the new
beat was seen running: a tick sent just before the kill may be sampled just after it, so
the gap the kill falls in is not always the one the failover opened.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from dataclasses import dataclass

import pytest
import redis

from tests.e2e.conftest import Fleet, Fleets, Sampler
from tests.e2e.test_scheduler import beats, scheduler_processes
from tests.helpers import wait_until

TICKS = "e2e-continuity-ticks"
INTERVAL = 2.0
LOCK_SECONDS, HEARTBEAT_SECONDS = 3, 1
SETTINGS = {"beat_schedule": {"e2e-continuity": {
    "task": "e2e.continuity", "schedule": INTERVAL, "options": {"queue": TICKS}}}}


@dataclass(frozen=True)
class TickReport:
    ticks: int
    doubled: int
    missed_in_failover: int
    missed_elsewhere: int
    failover_gap: float   # the longest gap between ticks in the failover, seconds

    def line(self) -> str:
        return (f"{self.ticks} ticks; doubled {self.doubled}; missed in the failover "
                f"{self.missed_in_failover} (gap {self.failover_gap:.1f} s); "
                f"missed elsewhere {self.missed_elsewhere}")


def tick_times(samples: list[tuple[float, int]]) -> list[float]:
    """One time per tick: each increase of the queue's length, at the sample that saw it."""
    times, before = [], samples[0][1]
    for at, length in samples[1:]:
        times += [at] * max(0, length - before)
        before = max(before, length)
    return times


def report(times: list[float], killed_at: float, back_at: float) -> TickReport:
    """The ticks' figures for a failure at ``killed_at`` after which a beat was seen
    running again at ``back_at``."""
    gaps = [(a, b - a) for a, b in itertools.pairwise(times)]
    doubled = sum(1 for _, gap in gaps if gap < INTERVAL / 2)

    def in_failover(start: float, gap: float) -> bool:
        return start < back_at and start + gap > killed_at

    failover = [gap for start, gap in gaps if in_failover(start, gap)]
    others = [gap for start, gap in gaps if not in_failover(start, gap)]

    def skipped(gap: float) -> int:
        return max(0, round(gap / INTERVAL) - 1)

    return TickReport(
        ticks=len(times), doubled=doubled,
        missed_in_failover=sum(skipped(g) for g in failover),
        missed_elsewhere=sum(skipped(g) for g in others),
        failover_gap=max(failover, default=0.0))


def test_a_tick_sampled_just_after_the_kill_leaves_the_next_gap_to_the_failover() -> None:
    """The last tick before the kill sampled 0.05 s after it, the new beat's first 4 s
    later: the slot missed is the failover's, not one missed elsewhere."""
    ticks = [0.0, 2.0, 4.0, 6.05, 10.05, 12.05]
    figures = report(ticks, killed_at=6.0, back_at=8.5)
    assert (figures.missed_in_failover, figures.missed_elsewhere) == (1, 0)
    assert figures.failover_gap == pytest.approx(4.0)
    # A slot missed after the new beat ran is still a defect.
    assert report([*ticks, 16.05], killed_at=6.0, back_at=8.5).missed_elsewhere == 1


def queue_length(client: redis.Redis) -> int:
    return int(client.llen(TICKS))


def settle(client: redis.Redis, seconds: float) -> None:
    wait_until(lambda: queue_length(client) >= 3, timeout=90, what="beat ticking")
    time.sleep(seconds)


def test_redis_schedule_store_across_a_sigkill_of_the_active_scheduler(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("continuity", redis_url)
    fleet.apply(pool={"queues": ["e2e-idle"], "minReplicas": 0, "maxReplicas": 1},
                scheduler={"replicas": 2, "scheduleStore": "Redis", "lock": {
                    "lockTimeSeconds": LOCK_SECONDS,
                    "heartbeatIntervalSeconds": HEARTBEAT_SECONDS}},
                settings=SETTINGS)
    client = redis.Redis.from_url(redis_url)
    lengths = Sampler(lambda: queue_length(client), 0.1)
    running = Sampler(lambda: beats(fleet), 0.2)
    try:
        wait_until(lambda: len({p.pod for p in scheduler_processes(fleet)
                                if p.program == "single-beat"}) == 2,
                   timeout=90, what="single-beat in both scheduler pods")
        settle(client, 8)
        # The schedule's state lives in the lock's Redis (here: the broker's).
        key = f"metamapper:e2e:{fleet.name}:beat:e2e-continuity"
        assert client.exists(key), f"{key} not in Redis"
        (active,) = beats(fleet)
        killed_at = time.time()
        os.kill(active.ppid, signal.SIGKILL)             # the active pod's single-beat
        took_over_at = wait_until(
            lambda: running.first(lambda found: any(p.pid != active.pid for p in found)),
            timeout=30, interval=0.1, what="another beat")
        time.sleep(16)
    finally:
        lengths.stop()
        running.stop()
        client.close()
    figures = report(tick_times(lengths.samples), killed_at, took_over_at)
    print(f"Redis schedule store, SingleBeat, SIGKILL of the active scheduler: takeover "
          f"{took_over_at - killed_at:.1f} s (lock {LOCK_SECONDS} s); {figures.line()}")
    assert max(len(found) for _, found in running.samples) == 1, "two beats at once"
    assert figures.doubled == 0
    assert figures.missed_elsewhere == 0
    # The failover gap is the takeover plus the new beat's start-up, then its first send.
    assert figures.missed_in_failover <= math.ceil(
        (took_over_at - killed_at + 10) / INTERVAL)


def scheduler_pods(fleet: Fleet) -> list[dict]:
    return fleet.pods("scheduler")


def test_standalone_scheduler_through_the_entrypoint_never_runs_two_beats(
        fleets: Fleets, redis_url: str) -> None:
    """commandStyle Entrypoint: the image's entrypoint (upstream's contract: `worker` /
    `scheduler` and Celery's arguments) with one scheduler pod and no single-beat."""
    fleet = fleets("standalone", redis_url)
    fleet.apply(pool={"minReplicas": 1, "maxReplicas": 1},
                scheduler={"mode": "Standalone", "scheduleStore": "Redis"},
                settings=SETTINGS, commandStyle="Entrypoint")
    fleet.wait_for_workers(1)                            # `worker ...` via the entrypoint
    [worker] = fleet.pods()
    assert "command" not in worker["spec"]["containers"][0]
    assert worker["spec"]["containers"][0]["args"][0] == "worker"
    client = redis.Redis.from_url(redis_url)
    lengths = Sampler(lambda: queue_length(client), 0.1)
    running = Sampler(lambda: beats(fleet), 0.2)
    try:
        settle(client, 6)
        assert not any(p.program == "single-beat" for p in scheduler_processes(fleet))
        # 1. The beat process dies: the kubelet restarts the container in the same pod.
        (active,) = beats(fleet)
        killed_at = time.time()
        os.kill(active.pid, signal.SIGKILL)
        restarted_at = wait_until(
            lambda: running.first(lambda found: any(p.pid != active.pid for p in found)),
            timeout=60, interval=0.1, what="beat restarted in its pod")
        time.sleep(10)
        kill_figures = report(tick_times(lengths.samples), killed_at, restarted_at)
        # 2. The pod is deleted: its replacement waits, gated, until it is gone.
        (pod,) = scheduler_pods(fleet)
        old = pod["metadata"]["name"]
        deleted_at = time.time()
        fleet.stack.kubectl("delete", "pod", "-n", "e2e", old, "--wait=false")

        def replacement() -> dict | None:
            return next((p for p in scheduler_pods(fleet)
                         if p["metadata"]["name"] != old), None)

        new = wait_until(replacement, timeout=30, what="a replacement scheduler pod")
        old_still_there = any(p["metadata"]["name"] == old for p in scheduler_pods(fleet))
        new_beat_at = wait_until(
            lambda: running.first(lambda found: any(p.pod == new["metadata"]["name"]
                                                    for p in found)),
            timeout=90, interval=0.1, what="beat in the replacement pod")
        time.sleep(10)
    finally:
        lengths.stop()
        running.stop()
        client.close()
    delete_figures = report(
        tick_times([s for s in lengths.samples if s[0] > restarted_at + 8]), deleted_at,
        new_beat_at)
    print(f"Standalone + Entrypoint, SIGKILL of beat (container restart): beat back after "
          f"{restarted_at - killed_at:.1f} s; {kill_figures.line()}")
    print(f"Standalone + Entrypoint, pod deleted: beat in the replacement after "
          f"{new_beat_at - deleted_at:.1f} s (replacement created while the old pod still "
          f"existed: {old_still_there}); {delete_figures.line()}")
    assert max(len(found) for _, found in running.samples) == 1, "two beats at once"
    assert kill_figures.doubled == 0 and delete_figures.doubled == 0
