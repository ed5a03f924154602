"""The warm-up before the fleet's beat, wired into the autoscaling cycle (over the small
fakes of test_wiring): a pool at zero is raised before its entry fires and left to the
policy after, even through quiet cycles; the lead follows its pods' measured starts; the
opt-out, a fleet without beat and an entry the operator cannot read touch only the
warm-up."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client

from metamapper_operator import kube as kube_module
from metamapper_operator.autoscale.drainplan import Load, WorkerPod
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.autoscale.shrink import Shrinker
from metamapper_operator.autoscale.waves import Outlook, Wave
from metamapper_operator.builders import LABEL_POOL
from metamapper_operator.config import Config
from metamapper_operator.model import parse
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import (
    DeploymentState,
    Observed,
    PoolScale,
    measured,
    render,
)
from tests.unit.sample import BODY
from tests.unit.test_wiring import ACCESS, KEY, FakeControl, FakeKube, FakeProbe, runtime_of

UTC = datetime.UTC
DEPLOYMENT = "mm-runs"


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


class StartingKube(FakeKube):
    """Its pods were created at ``created`` and took ``start_seconds`` to be Ready."""

    start_seconds: float | None = None
    created: datetime.datetime | None = None

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        return {name: dataclasses.replace(pod, start_seconds=self.start_seconds,
                                          created=self.created)
                for name, pod in (await super().list_pods(namespace, labels)).items()}


def wall_clock_autoscaler(runtime: Runtime, kube: FakeKube,
                          deployments: Callable[[Key], dict[str, DeploymentState]],
                          wall: Callable[[], datetime.datetime],
                          control: Callable[[], FakeControl]) -> Autoscaler:
    """An autoscaler whose policy's clock moves with the ``wall`` clock a test moves,
    draining through the workers ``control`` gives at the time, with nothing waiting on
    the broker."""
    autoscaler = Autoscaler(runtime, deployments, clock=lambda: wall().timestamp(), wall=wall)
    autoscaler.shrinker = Shrinker(
        kube, autoscaler.clock,  # type: ignore[arg-type]
        control_for=lambda access, options: control())  # type: ignore[arg-type,return-value]
    autoscaler.probes[ACCESS] = FakeProbe(0)
    return autoscaler


class Fleet:
    """One Metamapper with a metastore whose pool "runs" consumes the revisioner queue
    (upstream's beat sends queue_runs there at :15 and :45, create_runs and
    detect_run_timeouts at :00) from 0 to 3 pods; a wall clock the test moves (the policy's
    clock moves with it)."""

    def __init__(self, *, settings: dict[str, Any] | None = None,
                 autoscaling: dict[str, Any] | None = None,
                 scheduler: dict[str, Any] | None = None) -> None:
        self.wall = at("2026-12-07T10:20:00")
        self.kube = StartingKube()
        self.runtime = runtime_of(self.kube, Config(poll_seconds=1))
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        raw["spec"]["pools"] = [{"name": "runs", "queues": ["revisioner"], "minReplicas": 0,
                                 "maxReplicas": 3, "autoscaling": autoscaling or {}}]
        raw["spec"]["celery"] = {"settings": settings or {}}
        raw["spec"]["env"] = [{"name": "METAMAPPER_DB_HOST", "value": "metastore"}]
        if scheduler is not None:
            raw["spec"]["scheduler"] = scheduler
        state, _ = self.runtime.state(KEY, "u-1")
        state.fleet, state.access, state.generation = parse(raw), ACCESS, 3
        self.runtime.note_change()
        self.kube.labels = {"p-a": {LABEL_POOL: "runs"}}
        self.control = FakeControl({"p-a": Load()})
        self.autoscaler = wall_clock_autoscaler(self.runtime, self.kube, self.deployments,
                                                lambda: self.wall, lambda: self.control)

    @property
    def replicas(self) -> int:
        sizes = [size for name, size in self.kube.scaled if name == DEPLOYMENT]
        return sizes[-1] if sizes else 0

    def deployments(self, key: Key) -> dict[str, DeploymentState]:
        n = self.replicas
        return {DEPLOYMENT: DeploymentState(name=DEPLOYMENT, spec_hash="h", replicas=n,
                                            ready=n, updated=n)}

    async def cycle(self, at_time: str | None = None) -> None:
        if at_time is not None:
            self.wall = at(at_time)
        if not self.replicas:
            self.kube.pods = {}
        else:   # its one pod, with whatever the operator wrote on it
            self.kube.pods.setdefault("p-a", {})
        await self.autoscaler.cycle()
        if self.autoscaler.asking is not None:
            await self.autoscaler.asking

    def shown(self) -> PoolScale:
        return self.runtime.fleets[KEY].scaling["runs"]


def test_a_pool_at_zero_is_warm_before_its_entry_fires_and_left_to_the_policy_after(
        ) -> None:
    async def scenario() -> None:
        fleet = Fleet()
        for _ in range(5):                                   # at rest, then quiet
            await fleet.cycle()
            fleet.wall += datetime.timedelta(seconds=1)
        assert fleet.kube.scaled == [] and fleet.autoscaler.quiet is not None
        assert fleet.shown().warm_up == Outlook(
            warm=False, lead_seconds=31,    # 30 s before any start is measured, plus 1 s
            next_wave=Wave("queue-revisioner-runs", at("2026-12-07T10:45:00")))
        await fleet.cycle("2026-12-07T10:44:28")             # still quiet: before the lead
        assert fleet.kube.scaled == []
        await fleet.cycle("2026-12-07T10:44:29")             # 31 s before it fires
        assert fleet.kube.scaled == [(DEPLOYMENT, 1)]
        assert "ScaledUp" in fleet.kube.events
        warm = fleet.shown().warm_up
        assert warm is not None and warm.warm
        # Held through the wave and a minute after it, whatever the queue shows.
        while fleet.wall < at("2026-12-07T10:45:59"):
            await fleet.cycle()
            fleet.wall += datetime.timedelta(seconds=5)
        assert fleet.replicas == 1
        warm = fleet.shown().warm_up   # the wave in progress until its hold ends
        assert warm is not None and warm.warm and warm.next_wave == Wave(
            "queue-revisioner-runs", at("2026-12-07T10:45:00"))
        await fleet.cycle("2026-12-07T10:46:00")
        warm = fleet.shown().warm_up
        assert warm is not None and not warm.warm and warm.next_wave == Wave(
            "create-revisioner-runs", at("2026-12-07T11:00:00"))
        # Then the policy alone: an idle pool goes back to zero before the next wave.
        while fleet.wall < at("2026-12-07T10:58:00"):
            await fleet.cycle()
            fleet.wall += datetime.timedelta(seconds=5)
        assert fleet.replicas == 0
        assert min(size for _, size in fleet.kube.scaled[1:]) == 0

    asyncio.run(scenario())


def test_the_lead_follows_the_measured_pod_starts() -> None:
    async def scenario() -> None:
        fleet = Fleet()
        fleet.kube.start_seconds, fleet.kube.created = 12.4, fleet.wall
        fleet.autoscaler.probes[ACCESS] = FakeProbe(1)    # work: the workers are asked
        await fleet.cycle()                  # scaled up for the work
        await fleet.cycle("2026-12-07T10:21:00")   # its pod listed for the question
        await fleet.cycle("2026-12-07T10:21:01")
        warm = fleet.shown().warm_up
        assert warm is not None and warm.lead_seconds == 14   # 12.4 s, plus 1 s, up

    asyncio.run(scenario())


def test_without_a_beat_or_with_the_warm_up_off_the_pool_is_not_raised() -> None:
    async def scenario(fleet: Fleet) -> list[tuple[str, int]]:
        await fleet.cycle()
        await fleet.cycle("2026-12-07T10:44:50")
        await fleet.cycle("2026-12-07T10:45:00")
        assert fleet.shown().warm_up is None
        return fleet.kube.scaled

    assert asyncio.run(scenario(Fleet(scheduler={"enabled": False}))) == []
    assert asyncio.run(scenario(Fleet(autoscaling={"warmUp": {"enabled": False}}))) == []


def test_a_scheduler_held_back_sends_no_wave_to_warm_for() -> None:
    async def scenario() -> None:
        fleet = Fleet()
        fleet.runtime.fleets[KEY].held = "the scheduler's lock needs Redis"
        await fleet.cycle("2026-12-07T10:44:50")
        assert fleet.shown().warm_up is None and fleet.kube.scaled == []
        fleet.runtime.fleets[KEY].held = None    # the next reconcile finds it running
        fleet.runtime.note_change()
        await fleet.cycle("2026-12-07T10:44:51")
        assert fleet.kube.scaled == [(DEPLOYMENT, 1)]

    asyncio.run(scenario())


def test_warm_up_replicas_and_settings_routes_are_followed() -> None:
    async def scenario() -> None:
        fleet = Fleet(autoscaling={"warmUp": {"replicas": 2}}, settings={
            "beat_schedule": {"mine": {"task": "app.healthchecks.tasks.add",
                                       "schedule": "50 10 * * *",
                                       "options": {"queue": "revisioner"}}}})
        await fleet.cycle("2026-12-07T10:49:40")
        assert fleet.kube.scaled == [(DEPLOYMENT, 2)]
        warm = fleet.shown().warm_up
        assert warm is not None and warm.next_wave == Wave("mine", at("2026-12-07T10:50:00"))

    asyncio.run(scenario())


def test_an_entry_the_operator_cannot_read_costs_only_its_warm_up() -> None:
    async def scenario() -> None:
        fleet = Fleet(settings={"task_routes": {
            "app.revisioner.tasks.v1.scheduler.queue_runs": 5}})
        fleet.autoscaler.probes[ACCESS] = FakeProbe(4)
        await fleet.cycle("2026-12-07T10:14:50")
        # Scaled for its backlog as ever; not raised for the entry it cannot read.
        assert fleet.kube.scaled == [(DEPLOYMENT, 1)]
        warm = fleet.shown().warm_up
        assert warm is not None and warm.ignored == (
            "beat entry queue-revisioner-runs: the route of "
            "app.revisioner.tasks.v1.scheduler.queue_runs is neither a queue name nor an "
            "object naming one",)
        assert warm.next_wave == Wave("create-revisioner-runs", at("2026-12-07T11:00:00"))
        assert fleet.kube.events.count("BeatEntryIgnored") == 1
        assert fleet.runtime.fleets[KEY].faults == {}
        await fleet.cycle("2026-12-07T10:15:50")
        assert fleet.kube.events.count("BeatEntryIgnored") == 1   # told once

    asyncio.run(scenario())


def test_status_shows_the_warm_up_and_a_new_process_reads_it_back() -> None:
    fleet = parse(BODY)
    warm = Outlook(warm=True, lead_seconds=31,
                   next_wave=Wave("queue-revisioner-runs", at("2026-12-07T10:45:00")),
                   continuous=("create-check-executions",), ignored=("beat entry x: why",))
    scale = PoolScale(backlog=0, source="fake", desired=1, warm_up=warm)
    status = render(_observed(fleet, scale), {})
    assert status["pools"][0]["warmUp"] == {
        "warm": True, "leadSeconds": 31,
        "nextWave": {"entry": "queue-revisioner-runs", "at": "2026-12-07T10:45:00Z"},
        "continuous": ["create-check-executions"], "ignored": ["beat entry x: why"]}
    assert measured(status).scaling["default"] == scale
    cold = PoolScale(backlog=0, source="fake", desired=1,
                     warm_up=Outlook(warm=False, lead_seconds=5))
    status = render(_observed(fleet, cold), {})
    assert status["pools"][0]["warmUp"] == {"warm": False, "leadSeconds": 5}
    assert measured(status).scaling["default"] == cold
    covered = PoolScale(backlog=0, source="fake", desired=1,
                        warm_up=Outlook(warm=False, covered=True))
    status = render(_observed(fleet, covered), {})
    assert status["pools"][0]["warmUp"] == {"warm": False, "coveredByMinReplicas": True}
    assert measured(status).scaling["default"] == covered


def _observed(fleet: Any, scale: PoolScale) -> Observed:
    return Observed(generation=1, now="2026-12-07T10:00:00Z", fleet=fleet,
                    transport="redis", scaling={"default": scale})


def test_a_pod_start_is_read_from_its_creation_and_its_ready_condition() -> None:
    created = at("2026-12-07T10:00:00")
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", creation_timestamp=created),
        spec=client.V1PodSpec(node_name="n", containers=[]),
        status=client.V1PodStatus(phase="Running", conditions=[client.V1PodCondition(
            type="Ready", status="True",
            last_transition_time=created + datetime.timedelta(seconds=7.5))]))
    assert kube_module._worker_pod(pod).start_seconds == 7.5
    assert kube_module._worker_pod(pod).created == created
    # Once its worker restarted, Ready tells of the restart, not of the pod's start.
    pod.status.container_statuses = [client.V1ContainerStatus(
        name="worker", image="worker:1", image_id="", ready=True, restart_count=1)]
    assert kube_module._worker_pod(pod).start_seconds is None
    pod.status.container_statuses[0].restart_count = 0
    assert kube_module._worker_pod(pod).start_seconds == 7.5
    assert pod.status.conditions is not None
    pod.status.conditions[0].status = "False"
    assert kube_module._worker_pod(pod).start_seconds is None
