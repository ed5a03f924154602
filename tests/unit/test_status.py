"""The status: conditions, their transition times, and patches of what changed only."""

from __future__ import annotations

import datetime
from typing import Any

from metamapper_operator.autoscale.schedule import Window
from metamapper_operator.builders import Held, Part
from metamapper_operator.model import Fleet, parse
from metamapper_operator.status import (
    DeploymentState,
    Observed,
    PoolScale,
    Stall,
    changes,
    measured,
    pod_stall,
    render,
)
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


def test_degraded_names_every_problem_so_an_outage_does_not_hide_a_held_scheduler() -> None:
    held = render(Observed(generation=3, now="t", fleet=parse(body(broker={
        "url": "amqp://rabbit.invalid:5672/mm"})), transport="amqp", deployments=RUNNING,
        broker_error="rabbitmq amqp://rabbit.invalid:5672/mm: unreachable"), {})
    degraded = conditions_of(held)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "BrokerUnreachable"
    assert "unreachable" in degraded["message"]
    assert "single-beat lock needs Redis" in degraded["message"]


def test_a_pool_shows_its_draining_pods_and_the_last_drain_given_up() -> None:
    fleet = parse(BODY)
    draining = PoolScale(backlog=0, desired=1, draining=("mm-default-a",),
                         drain_timed_out="drain of mm-default-b timed out after 60 s")
    (pool, *_) = status_of(fleet, scaling={"default": draining})["pools"]
    assert pool["draining"] == ["mm-default-a"]
    assert pool["lastDrainTimeout"] == "drain of mm-default-b timed out after 60 s"
    (pool, *_) = status_of(fleet, scaling={"default": PoolScale(backlog=0)})["pools"]
    assert "draining" not in pool and "lastDrainTimeout" not in pool


def pod(name: str, waiting: str | None = None, unschedulable: bool = False
        ) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending"}
    if waiting:
        status["containerStatuses"] = [{"name": "worker", "state": {"waiting": {
            "reason": waiting, "message": "Back-off pulling image "
            "\"https://user:hunter2@registry.example/worker:1\""}}}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable",
                                 "message": "0/1 nodes are available: 1 Insufficient cpu."}]
    return {"metadata": {"name": name}, "status": status}


def test_a_pod_tells_why_a_rollout_cannot_finish() -> None:
    assert pod_stall([pod("a"), pod("b", waiting="ContainerCreating")]) is None
    stall = pod_stall([pod("a"), pod("b", waiting="ImagePullBackOff")])
    assert stall is not None and stall.reason == "ImagePullBackOff"
    assert stall.message.startswith("pod b container worker: ImagePullBackOff: Back-off")
    assert "hunter2" not in stall.message
    for reason in ("ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError"):
        found = pod_stall([pod("a", waiting=reason)])
        assert found is not None and found.reason == reason
    stranded = pod_stall([pod("a", unschedulable=True)])
    assert stranded is not None and stranded.reason == "Unschedulable"
    assert "Insufficient cpu" in stranded.message


def test_a_failed_rollout_is_degraded_with_its_reason_not_rolling_out_for_ever() -> None:
    stuck = DeploymentState(name="mm-default", spec_hash="h", replicas=1, generation=2,
                            observed_generation=2,
                            stall=Stall("ProgressDeadlineExceeded", "timed out progressing"))
    conditions = conditions_of(status_of(parse(BODY), deployments={
        **RUNNING, "mm-default": stuck}))
    for kind, state in (("Ready", "False"), ("Degraded", "True"), ("Progressing", "False")):
        assert (conditions[kind]["status"], conditions[kind]["reason"]) == (
            state, "ProgressDeadlineExceeded"), kind
    assert "mm-default: ProgressDeadlineExceeded" in conditions["Degraded"]["message"]


def test_a_pool_below_the_size_its_backlog_asks_for_is_not_ready() -> None:
    """Stranded capacity: the autoscaler wants more workers than run (the size could not
    be set, or the pods find no room), so the queues wait: not Ready."""
    wanted = {"default": PoolScale(backlog=40, desired=4)}
    conditions = conditions_of(status_of(parse(BODY), deployments=RUNNING, scaling=wanted))
    ready = conditions["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "BelowDesired")
    assert "default: 1 of 4 desired workers ready" in ready["message"]
    enough = {"default": PoolScale(backlog=0, desired=1)}
    assert conditions_of(status_of(parse(BODY), deployments=RUNNING, scaling=enough))[
        "Ready"]["status"] == "True"


def test_a_part_held_for_a_missing_secret_is_shown_and_the_pools_are_not() -> None:
    flower = Held(Part.FLOWER, "spec.flower.basicAuthSecretRef: Secret 'a' not found: "
                  "Flower is not deployed; the worker pools run")
    lock = Held(Part.SCHEDULER, "spec.scheduler.lock.redisURLSecretRef: Secret 'l' not "
                "found: the scheduler is held back; the worker pools run")
    status = status_of(parse(BODY), deployments={"mm-default": settled("mm-default")},
                       held=(flower, lock))
    conditions = conditions_of(status)
    assert status["scheduler"]["state"] == "Held"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Progressing"]["reason"] == "Settled"  # the pools are all there
    assert flower.message in conditions["Degraded"]["message"]
    assert lock.message in conditions["Degraded"]["message"]
    flower_only = conditions_of(status_of(parse(BODY), deployments=RUNNING, held=(flower,)))
    assert flower_only["Ready"]["reason"] == "SecretMissing"
    assert flower_only["Degraded"]["reason"] == "SecretMissing"


def test_the_measurements_a_status_shows_render_the_same_status_again() -> None:
    """What a new operator process starts from (a restart): its first status, rendered
    before it measures anything, is the one already there."""
    fleet = parse(BODY)
    scale = PoolScale(backlog=4, source="redis", desired=2, last_scale_time="2026-12-06T10:00:00Z",
                      last_scale_reason="backlog 4", stale_in_flight=1,
                      draining=("mm-default-a",), drain_timed_out="drain timed out",
                      window=Window(name="night", min_replicas=2, end=datetime.datetime(
                          2026, 12, 7, 6, tzinfo=datetime.UTC)), throughput_per_pod=1.5,
                      arrival_rate=2.25, policy="serviceTime")
    for observed in ({"broker_error": "redis r: refused", "unconsumed": ()},
                     {"unconsumed": ("orphan",)}, {}):
        shown = status_of(fleet, deployments=RUNNING, scaling={"default": scale}, **observed)
        last = measured(shown)
        again = render(Observed(generation=3, now="later", fleet=fleet, transport="redis",
                                deployments=RUNNING, scaling=last.scaling,
                                broker_error=last.broker_error, unconsumed=last.unconsumed),
                       shown)
        if observed.get("unconsumed") != ("orphan",):   # named in a message only
            assert changes(shown, again) == {}
        assert last.scaling["default"] == scale
        assert last.broker_error == observed.get("broker_error")
        assert last.unconsumed == (() if observed.get("unconsumed") == () else None)
