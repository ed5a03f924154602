"""Disruption on real pods: a pool's PodDisruptionBudget, and a worker pod marked not safe
to evict for node autoscalers exactly while its worker runs a task."""

from __future__ import annotations

from devenv.waiting import wait_until
from devenv.workload import records
from metamapper_operator.autoscale.eviction import NOT_SAFE_TO_EVICT
from tests.e2e.conftest import Fleet, Fleets


def _annotations(fleet: Fleet, pod: str) -> dict[str, str]:
    return dict(fleet.get("pod", pod)["metadata"].get("annotations") or {})


def _marked(fleet: Fleet, pod: str) -> bool:
    found = _annotations(fleet, pod)
    return all(found.get(key) == value for key, value in NOT_SAFE_TO_EVICT.items())


def test_a_busy_worker_pod_is_not_safe_to_evict_until_it_is_idle(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("evict", redis_url)
    fleet.apply({"concurrency": 1, "minReplicas": 1, "maxReplicas": 1})
    fleet.wait_for_workers(1)
    (pod,) = [p["metadata"]["name"] for p in fleet.pods()]
    budget = fleet.get("poddisruptionbudget", fleet.deployment)
    assert budget["spec"]["maxUnavailable"] == 1
    wait_until(lambda: budget_allows(fleet) == 1, timeout=30,
               what="the budget counting the pod")
    assert not any(key in _annotations(fleet, pod) for key in NOT_SAFE_TO_EVICT)

    (task,) = fleet.send(1, 25.0)
    wait_until(lambda: records(fleet.records, "started", task), timeout=30, what="started")
    wait_until(lambda: _marked(fleet, pod), timeout=20, interval=0.5,
               what="the not-safe-to-evict marks while the task runs")
    assert not fleet.tally([task]).done, "marked while running, not after"

    fleet.wait_done([task], timeout=60)
    wait_until(lambda: not any(key in _annotations(fleet, pod) for key in NOT_SAFE_TO_EVICT),
               timeout=20, interval=0.5, what="the marks removed once the worker is idle")


def budget_allows(fleet: Fleet) -> int:
    status = fleet.get("poddisruptionbudget", fleet.deployment).get("status") or {}
    return int(status.get("disruptionsAllowed", -1))
