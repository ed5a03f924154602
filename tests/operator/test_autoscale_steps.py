"""Scale-down by steps against real Redis and the real apiserver and controller-manager:
the spec's defaults (a step of 25 %, the window's 90th percentile, the panic window) as
the operator applies them, and the sizing in force in status.

No worker consumes here (there is no kubelet): the pods stay Pending, hold nothing, and
are drained at once; no throughput is measured, so the backlog target sizes the pool.
"""

from __future__ import annotations

import re

import redis

from devenv.waiting import wait_until
from tests.conftest import Cluster
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply
from tests.operator.test_autoscale import events, pool_status, push, redis_fleet, replicas

# The test suite's short window, with the spec's defaults for everything else.
SHORT = {"scaleDownStabilizationSeconds": 4, "scaleToZeroCooldownSeconds": 2}


def test_a_pool_shrinks_by_steps_of_a_quarter_and_says_which_sizing_is_in_force(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    apply(cluster, namespace, redis_fleet(redis_url, autoscaling=dict(SHORT)))
    wait_until(lambda: replicas(cluster, namespace) == 1, what="the pool at minReplicas")
    push(redis_url, 9)                     # 9 waiting / 2 per pod -> 5 pods
    wait_until(lambda: replicas(cluster, namespace) == 5, timeout=10, what="5 pods")
    status = wait_until(lambda: pool_status(cluster, namespace).get("backlog") == 9
                        and pool_status(cluster, namespace), what="backlog in status")
    assert isinstance(status, dict)
    assert status["policy"] == "backlog"   # no pod ever ran a task: nothing measured
    assert "throughputPerPod" not in status and "arrivalRate" not in status

    redis.Redis.from_url(redis_url).delete("default")
    wait_until(lambda: replicas(cluster, namespace) == 1, timeout=60, what="back to 1")
    sizes = [tuple(map(int, found.groups())) for message in events(
        cluster, namespace, "ScaledDown")
        if (found := re.search(r": (\d+) -> (\d+) pods", message))]
    # 25 % of the pods, rounded up, per step: 5 -> 3 -> 2 -> 1, never 5 -> 1.
    assert sorted(sizes, reverse=True) == [(5, 3), (3, 2), (2, 1)], sizes
