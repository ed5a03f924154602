"""A pause pins real pods; a latency target sizes a pool by the throughput its real
workers show."""

from __future__ import annotations

from devenv.workload import Tally
from tests.e2e.conftest import NAMESPACE, Fleet, Fleets, ReplicasWatch
from tests.helpers import wait_until

PAUSED_REPLICAS = "autoscaling.metamapper.io/paused-replicas"


def annotate(fleet: Fleet, *pairs: str) -> None:
    fleet.stack.kubectl("annotate", "--overwrite", "-n", NAMESPACE, "metamapper", fleet.name,
                        *pairs)


def test_paused_replicas_pin_real_pods_that_run_every_task(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("paused", redis_url)
    fleet.apply({"concurrency": 1})
    fleet.wait_for_workers(1)
    annotate(fleet, f"{PAUSED_REPLICAS}=2")
    fleet.wait_for_workers(2)
    wait_until(lambda: fleet.condition("Paused") == "True", what="the Paused condition")
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)
    ids = fleet.send(8, 1.0)           # 8 waiting, 1 per pod: 4 pods if not paused
    result = fleet.wait_done(ids)
    replicas.stop()
    assert result == Tally(sent=8, done=8, lost=0, duplicated=0, interrupted=0)
    assert set(replicas.values()) == {2}, replicas.values()
    assert not fleet.events("ScaledUp")

    fleet.stack.kubectl("annotate", "-n", NAMESPACE, "metamapper", fleet.name,
                        f"{PAUSED_REPLICAS}-")
    wait_until(lambda: fleet.replicas() == 1, timeout=30, what="autoscaled again: 1 pod")
    # The status that says so is written after the scale.
    wait_until(lambda: fleet.condition("Paused") == "False", what="Paused False again")


def test_a_latency_target_sizes_the_pool_by_measured_throughput(
        fleets: Fleets, redis_url: str) -> None:
    """The same backlog asks for one pod while tasks are short and for more once they are
    long. The backlog target alone (100 per pod) would keep one pod throughout.

    Nothing here depends on how many probes a burst spans (the machine's speed): a burst
    drained between two probes is measured too, as a lower bound, and each step waits for
    the status or the watch to show what it asserts."""
    fleet = fleets("latency", redis_url)
    fleet.apply({"concurrency": 1, "autoscaling": {
        "targetWaitSeconds": 10, "targetBacklogPerReplica": 100}})
    fleet.wait_for_workers(1)
    # The worker consumes before its pod passes the readiness probe; a burst sent before
    # the operator sees the pod ready would be served across a change of the ready count,
    # which the estimator rightly does not count as throughput.
    wait_until(lambda: fleet.pool_status().get("readyReplicas") == 1, timeout=60,
               what="the operator seeing the worker pod ready")
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)

    # ~5 per second: 20 done well within 10 s by one pod. One pod is enough while the
    # estimate is at least 2 per second (20 within 10 s): also when a busy machine makes
    # each task take twice as long.
    fast = fleet.send(20, 0.2)
    fast_done = fleet.wait_done(fast)
    # The probe that finds the burst drained may come, and its status be written, a cycle
    # after the last task.
    measured = wait_until(lambda: fleet.pool_status().get("throughputPerPod"), timeout=30,
                          what="the throughput measured from the short tasks")
    assert isinstance(measured, int | float), measured
    assert set(replicas.values()) == {1}, replicas.values()

    # 0.5 per second: 36 take 72 s on one pod; 4 pods are asked for once the estimate is
    # under about 36 / 4 pods / 10 s, which the backlog target alone (100 per pod) never
    # asks for. The estimate falls with the first span of slow work done (about 2 s on one
    # pod). How it compares with the fast one is not asserted: a fast burst drained
    # between two probes gives only a lower bound, which depends on when the probes fell.
    # tests/unit/test_latency.py simulates this story at any probe spacing.
    slow = fleet.send(36, 2.0)
    # The status of the cycle that asked for 4 pods (written after the scale).
    status = wait_until(lambda: (s := fleet.pool_status()).get("desiredReplicas") == 4 and s,
                        timeout=60,
                        what="the pool at maxReplicas as the measured throughput falls")
    wait_until(lambda: 4 in replicas.values(), what="the watch seeing 4 replicas")
    slow_done = fleet.wait_done(slow)
    replicas.stop()

    assert max(replicas.values()) == 4, replicas.values()
    assert isinstance(status["throughputPerPod"], int | float), status
    assert fast_done == Tally(sent=20, done=20, lost=0, duplicated=0, interrupted=0)
    assert slow_done == Tally(sent=36, done=36, lost=0, duplicated=0, interrupted=0)
