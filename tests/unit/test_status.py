"""The status: conditions, their transition times, and patches of what changed only."""

from __future__ import annotations

import copy

from metamapper_operator.model import parse
from metamapper_operator.status import DeploymentState, Observed, changes, render
from tests.unit.sample import BODY, body


def test_status_keeps_transition_times_and_patches_only_changes() -> None:
    fleet = parse(BODY)
    deps = {"mm-default": DeploymentState("mm-default", "h", 1, ready=1, updated=1,
                                          generation=1, observed_generation=1),
            "mm-scheduler": DeploymentState("mm-scheduler", "h", 2, ready=2, updated=2,
                                            generation=1, observed_generation=1)}
    first = render(Observed(3, "t1", fleet, "redis", deployments=deps), {})
    assert first["workers"] == "1/1" and first["scheduler"]["state"] == "Running"
    ready = next(c for c in first["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastTransitionTime"] == "t1"
    second = render(Observed(3, "t2", fleet, "redis", deployments=deps), first)
    assert second == first and changes(first, second) == {}
    invalid = render(Observed(4, "t3", invalid="spec.x: bad"), first)
    patch = changes({**first, "kopf": {"x": 1}}, invalid)
    assert patch["pools"] is None and "kopf" not in patch
    assert next(c for c in invalid["conditions"] if c["type"] == "InvalidSpec")[
        "lastTransitionTime"] == "t3"


def test_default_grace_outlasts_the_workers_task_time_limit_and_a_short_one_is_reported(
        ) -> None:
    conditions = {c["type"]: c for c in render(Observed(3, "t", parse(BODY), "redis"), {})[
        "conditions"]}
    assert conditions["GracePeriodTooShort"]["status"] == "False"
    pools = [{"name": "default", "queues": ["default"], "terminationGracePeriodSeconds": 300},
             {"name": "long", "queues": ["long"], "terminationGracePeriodSeconds": 3000}]
    short = parse(body(pools=pools, celery={"settings": {"task_time_limit": 2400}}))
    conditions = {c["type"]: c for c in render(Observed(3, "t", short, "redis"), {})[
        "conditions"]}
    grace = conditions["GracePeriodTooShort"]
    assert grace["status"] == "True" and "default (300 s)" in grace["message"]
    assert "2400" in grace["message"] and "long" not in grace["message"]


def test_an_unreachable_broker_makes_the_object_not_ready() -> None:
    fleet = parse(copy.deepcopy(BODY))
    deps = {name: DeploymentState(name, "h", 1, ready=1, updated=1, generation=1,
                                  observed_generation=1)
            for name in ("mm-default", "mm-scheduler")}
    status = render(Observed(3, "t", fleet, "redis", broker_error="redis r: refused",
                             deployments=deps), {})
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "BrokerUnreachable"
    assert conditions["BrokerUnreachable"]["status"] == "True"
