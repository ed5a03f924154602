"""The status: conditions, their transition times, and patches of what changed only."""

from __future__ import annotations

from typing import Any

from metamapper_operator.model import Fleet, parse
from metamapper_operator.status import DeploymentState, Observed, changes, render
from tests.unit.sample import BODY, body, settled

RUNNING = {"mm-default": settled("mm-default"), "mm-scheduler": settled("mm-scheduler", 2)}


def status_of(fleet: Fleet, now: str = "t", deployments: dict[str, DeploymentState] | None = None,
              **observed: Any) -> dict[str, Any]:
    return render(Observed(generation=3, now=now, fleet=fleet, transport="redis",
                           deployments=deployments, **observed), {})


def conditions_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_status_keeps_transition_times_and_patches_only_changes() -> None:
    fleet = parse(BODY)
    first = status_of(fleet, "t1", RUNNING)
    assert first["workers"] == "1/1" and first["scheduler"]["state"] == "Running"
    ready = conditions_of(first)["Ready"]
    assert ready["status"] == "True" and ready["lastTransitionTime"] == "t1"
    second = render(Observed(generation=3, now="t2", fleet=fleet, transport="redis",
                             deployments=RUNNING), first)
    assert second == first and changes(first, second) == {}
    invalid = render(Observed(generation=4, now="t3", invalid="spec.x: bad"), first)
    patch = changes({**first, "kopf": {"x": 1}}, invalid)
    assert patch["pools"] is None and "kopf" not in patch
    assert conditions_of(invalid)["InvalidSpec"]["lastTransitionTime"] == "t3"


def test_default_grace_outlasts_the_workers_task_time_limit_and_a_short_one_is_reported(
        ) -> None:
    assert conditions_of(status_of(parse(BODY)))["GracePeriodTooShort"]["status"] == "False"
    pools = [{"name": "default", "queues": ["default"], "terminationGracePeriodSeconds": 300},
             {"name": "long", "queues": ["long"], "terminationGracePeriodSeconds": 3000}]
    short = parse(body(pools=pools, celery={"settings": {"task_time_limit": 2400}}))
    grace = conditions_of(status_of(short))["GracePeriodTooShort"]
    assert grace["status"] == "True" and "default (300 s)" in grace["message"]
    assert "2400" in grace["message"] and "long" not in grace["message"]


def test_an_unreachable_broker_makes_the_object_not_ready() -> None:
    status = status_of(parse(BODY), deployments=RUNNING, broker_error="redis r: refused")
    conditions = conditions_of(status)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "BrokerUnreachable"
    assert conditions["BrokerUnreachable"]["status"] == "True"
