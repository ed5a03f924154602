"""Faults mid-burst: the operator killed and restarted, the broker restarted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from devenv.waiting import WaitTimeout, wait_until
from devenv.workload import Tally, records
from tests.e2e.conftest import WINDOW_SECONDS, Fleets, ReplicasWatch, Sampler
from tests.helpers import OwnRedis, running_redis, wait_for_event

VISIBILITY_SECONDS = 8


def assert_no_flapping(values: list[int]) -> None:
    """Sizes rise, then fall: never up again after a step down."""
    peak = values.index(max(values))
    assert values[:peak + 1] == sorted(values[:peak + 1]), values
    assert values[peak:] == sorted(values[peak:], reverse=True), values


def test_operator_killed_mid_burst_converges_without_flapping(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("restart", redis_url)
    # Target 1 per pod: desired = backlog, capped at 4 (the backlog target alone: the
    # service-time sizing would let 4 pods go while more than 4 messages wait).
    fleet.apply({"concurrency": 1, "autoscaling": {"targetWaitSeconds": 0}})
    fleet.wait_for_workers(1)
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)
    backlog = Sampler(fleet.backlog, 0.25)
    ids = fleet.send(40, 1.0)

    wait_until(lambda: fleet.replicas() == 4, timeout=15, what="4 pods")
    restarts = fleet.stack.kill_operator()   # SIGKILL in its container; the kubelet restarts it
    time.sleep(1)                      # the pool works on without an operator
    assert fleet.tally(ids).done < len(ids), "the burst ended before the restart"
    fleet.stack.wait_operator_ready(restarts + 1)
    result = fleet.wait_done(ids)
    wait_until(lambda: fleet.replicas() == 1, timeout=WINDOW_SECONDS + 20,
               what="the pool back at minReplicas")
    replicas.stop_once(1)
    last_change = replicas.changes()[-1][0]
    wait_until(lambda: backlog.samples[-1][0] > last_change, what="a backlog sample")
    backlog.stop()

    assert result == Tally(sent=40, done=40, lost=0, duplicated=0, interrupted=0)
    changes = replicas.changes()
    values = [n for _, n in changes]
    assert values[0] == 1 and max(values) == 4 and values[-1] == 1, values
    assert_no_flapping(values)
    for (_, before), (at, after) in pairwise(changes):
        if after < before:   # a step down only once the backlog fits the smaller pool
            assert backlog.after(at) <= after, (changes, backlog.samples)
    rises = sum(1 for a, b in pairwise(values) if b > a)
    falls = sum(1 for a, b in pairwise(values) if b < a)

    def announced() -> tuple[int, int]:
        return len(fleet.events("ScaledUp")), len(fleet.events("ScaledDown"))

    with contextlib.suppress(WaitTimeout):   # an Event follows the change it announces
        wait_until(lambda: announced() == (rises, falls), timeout=15)
    assert announced() == (rises, falls)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis server of the test's own that keeps every write across a restart."""
    with running_redis(tmp_path / "redis", persistent=True) as server:
        yield server


@pytest.mark.timeout(600)
def test_broker_restart_holds_the_fleet_and_loses_no_task(
        own_broker: OwnRedis, fleets: Fleets) -> None:
    """Celery terminates the tasks it runs when the broker connection drops (late acks:
    they cannot be acknowledged any more); their messages stay in kombu's ``unacked`` hash
    and are delivered again by the workers' visibility sweep. Metamapper's visibility
    timeout is an hour; this fleet's is seconds, so the redelivery happens within the test.
    The sweep's lock is shortened too: a sweep cut off by the outage leaves it held (it
    survives the restart) until it expires, 300 s by default.

    Across a broker restart Celery delivers at least once: a task in flight when the
    broker went away may finish and still be delivered again. So no task may be lost,
    and only tasks that were running at the outage may have run twice.
    """
    fleet = fleets("broker", own_broker.url)
    fleet.apply({"concurrency": 2}, settings={"broker_transport_options": {
        "visibility_timeout": VISIBILITY_SECONDS, "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1, "unacked_mutex_expire": VISIBILITY_SECONDS}})
    fleet.wait_for_workers(1)
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)
    ids = fleet.send(40, 1.0)

    wait_until(lambda: fleet.replicas() == 4, timeout=15, what="4 pods")
    wait_until(lambda: fleet.tally(ids).done >= 8, timeout=60, what="the burst under way")
    own_broker.stop()
    stopped_at = time.time()
    wait_until(lambda: fleet.condition("BrokerUnreachable") == "True", timeout=15,
               what="BrokerUnreachable")
    time.sleep(WINDOW_SECONDS + 1)     # longer than the window: still no scale-down
    assert fleet.replicas() == 4
    own_broker.start()
    restarted_at = time.time()
    wait_until(lambda: fleet.condition("BrokerUnreachable") == "False", timeout=30,
               what="the broker reachable again")
    # Tasks cut off by the outage come back only after the visibility timeout, through a
    # worker's periodic restore of kombu's unacked messages: give them time.
    result = fleet.wait_done(ids, timeout=300)
    wait_until(lambda: fleet.replicas() == 1, timeout=WINDOW_SECONDS + 20,
               what="the pool back at minReplicas")
    replicas.stop_once(1)

    print(f"broker restart: {result}")
    assert (result.done, result.lost) == (40, 0), result
    for task_id in ids:   # a task ran again only if it was running at the outage, and
        first, *again = records(fleet.records, "started", task_id)   # only once back
        assert all(first.at < stopped_at and run.at > restarted_at for run in again)
    changes = replicas.changes()
    assert [n for at, n in changes if stopped_at <= at <= restarted_at] == []
    assert [n for at, n in changes if at < stopped_at][-1] == 4
    assert_no_flapping([n for _, n in changes])
    wait_for_event(fleet.events, "BrokerUnreachable")
    wait_for_event(fleet.events, "BrokerReachable")
