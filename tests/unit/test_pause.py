"""Pausing autoscaling by annotation: parsing, the pinned size, and what status says."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from metamapper_operator.builders import initial_replicas
from metamapper_operator.model import PAUSED, PAUSED_REPLICAS, Pause, SpecError, parse
from metamapper_operator.status import DeploymentState, Observed, PoolScale, render

BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "mm", "uid": "u-1", "generation": 1},
    "spec": {"image": "worker:1", "broker": {"url": "redis://redis:6379/0"},
             "scheduler": {"enabled": False},
             "pools": [{"name": "default", "queues": ["default"], "minReplicas": 1,
                        "maxReplicas": 5}]},
}


def annotated(**annotations: str) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    body["metadata"]["annotations"] = {"unrelated": "x", **annotations}
    return body


@pytest.mark.parametrize(("annotations", "pause"), [
    ({}, None),
    ({PAUSED: "false"}, None),
    ({PAUSED: "true"}, Pause()),
    ({PAUSED: "True "}, Pause()),
    ({PAUSED_REPLICAS: "3"}, Pause(3)),            # alone, it pauses too (as in KEDA)
    ({PAUSED: "true", PAUSED_REPLICAS: "0"}, Pause(0)),
])
def test_pause_annotations(annotations: dict[str, str], pause: Pause | None) -> None:
    assert parse(annotated(**annotations)).pause == pause


@pytest.mark.parametrize(("annotations", "field", "says"), [
    ({PAUSED: "yes"}, f"metadata.annotations[{PAUSED}]", "must be \"true\" or \"false\""),
    ({PAUSED_REPLICAS: "-1"}, f"metadata.annotations[{PAUSED_REPLICAS}]",
     "must be a whole number of pods"),
    ({PAUSED_REPLICAS: "two"}, f"metadata.annotations[{PAUSED_REPLICAS}]",
     "not 'two'"),
    ({PAUSED: "false", PAUSED_REPLICAS: "2"}, f"metadata.annotations[{PAUSED_REPLICAS}]",
     "remove one of them"),
])
def test_bad_pause_annotations_name_the_annotation(annotations: dict[str, str], field: str,
                                                   says: str) -> None:
    with pytest.raises(SpecError) as err:
        parse(annotated(**annotations))
    assert err.value.field == field
    assert says in err.value.message


@pytest.mark.parametrize(("annotations", "current", "expected"), [
    ({PAUSED: "true"}, 4, 4),          # keeps its size
    ({PAUSED_REPLICAS: "2"}, 4, 2),    # pinned
    ({PAUSED_REPLICAS: "9"}, 4, 9),    # pinned above maxReplicas, as KEDA does
    ({PAUSED_REPLICAS: "0"}, 4, 0),
])
def test_paused_pools_keep_or_take_the_pinned_size(annotations: dict[str, str], current: int,
                                                   expected: int) -> None:
    fleet = parse(annotated(**annotations))
    assert initial_replicas(fleet, fleet.pools[0], current) == expected


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in status["conditions"] if c["type"] == kind)
    return found


def test_status_shows_the_pause_and_no_stale_measurement() -> None:
    deps = {"mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=2,
                                          ready=2, updated=2, generation=1,
                                          observed_generation=1)}
    scaling = {"default": PoolScale(backlog=7, source="redis", desired=2)}

    def status(body: dict[str, Any], previous: dict[str, Any],
               **scaled: Any) -> dict[str, Any]:
        return render(Observed(generation=1, now="t", fleet=parse(body), transport="redis",
                               deployments=deps, **scaled), previous)

    running = status(BODY, {}, scaling=scaling)
    assert condition(running, "Paused")["status"] == "False"
    assert running["pools"][0]["backlog"] == 7

    pinned = status(annotated(**{PAUSED_REPLICAS: "2"}), running, scaling=scaling)
    paused = condition(pinned, "Paused")
    assert (paused["status"], paused["reason"]) == ("True", "PinnedReplicas")
    assert "held at 2 pods" in paused["message"]
    assert "backlog" not in pinned["pools"][0] and "backlog" not in pinned
    assert condition(pinned, "Ready")["status"] == "True"
    held = status(annotated(**{PAUSED: "true"}), running)
    assert condition(held, "Paused")["reason"] == "Annotation"


def test_a_paused_fleet_shows_no_broker_error_from_before_the_pause() -> None:
    """The broker of a paused fleet is not measured: the last error would stay for ever."""
    deps = {"mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=2,
                                          ready=2, updated=2, generation=1,
                                          observed_generation=1)}
    status = render(Observed(generation=1, now="t", fleet=parse(annotated(**{PAUSED: "true"})),
                             transport="redis", deployments=deps,
                             broker_error="redis redis:6379: refused"), {})
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Degraded")["status"] == "False"
    unreachable = condition(status, "BrokerUnreachable")
    assert (unreachable["status"], unreachable["reason"]) == ("False", "NotMeasured")


def test_a_pause_pinned_at_zero_is_not_ready() -> None:
    """Nothing consumes the queues: the fleet is not ready to do work."""
    stopped = {"mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=0,
                                             generation=1, observed_generation=1)}
    status = render(Observed(generation=1, now="t", fleet=parse(annotated(**{
        PAUSED_REPLICAS: "0"})), transport="redis", deployments=stopped), {})
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PinnedToZero")
    assert PAUSED_REPLICAS in ready["message"]
