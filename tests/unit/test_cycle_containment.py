"""The autoscaling cycle contains what fails: a pool that raises, a queue that cannot be
measured, a status that cannot be written stay their object's (Ready False with the reason,
one Warning event) while every other fleet scales in the same cycle; questions to workers
come after the decisions and never hold one; finished pods are not the pool's (wired over
the small fakes of test_wiring)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio import client

from metamapper_operator import metrics
from metamapper_operator.autoscale.drainplan import WorkerPod
from metamapper_operator.autoscale.eviction import NOT_SAFE_TO_EVICT
from metamapper_operator.autoscale.loop import (
    LATE_AT_ONCE,
    LISTINGS_AT_ONCE,
    OBJECTS_AT_ONCE,
    Autoscaler,
)
from metamapper_operator.autoscale.shrink import Shrinker
from metamapper_operator.brokers import QueueDepth
from metamapper_operator.builders import LABEL_POOL
from metamapper_operator.config import Config
from metamapper_operator.kube import Kube, KubeError
from metamapper_operator.model import Schedule, parse
from metamapper_operator.references import BrokerAccess
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import FleetState, Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY
from tests.unit.test_wiring import (
    ACCESS,
    FakeControl,
    FakeKube,
    FakeProbe,
    cycle_and_answers,
    runtime_of,
)

# Objects of their own: the metric series they leave would be another test's.
CANARY = Key("containment", "mm")
BAD = Key("containment", "bad")
PASSWORD = "hunter2-broker"
SECRET_ACCESS = BrokerAccess(transport="redis", url=f"redis://:{PASSWORD}@r:6379/0")


@dataclass
class Fleets:
    runtime: Runtime
    kube: FakeKube
    autoscaler: Autoscaler
    replicas: dict[Key, int] = field(default_factory=dict)


@pytest.fixture(autouse=True)
def no_series_left() -> Iterator[None]:
    yield
    for key in (CANARY, BAD):
        metrics.forget(*key)


def fleets(*keys: Key, access: BrokerAccess = ACCESS, waiting: int = 9,
           config: Config | None = None) -> Fleets:
    """Objects of ``BODY`` (pool ``default``, one pod each) on one broker, autoscaled
    every second unless ``config`` says otherwise."""
    kube = FakeKube()
    runtime = runtime_of(kube, config or Config(poll_seconds=1))
    made = Fleets(runtime, kube, Autoscaler(runtime, lambda key: deployments(made, key)))
    for key in keys:
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=key.namespace, name=key.name, uid=f"u-{key.name}")
        state, _ = runtime.state(key, f"u-{key.name}")
        state.fleet, state.access, state.generation = parse(raw), access, 3
    runtime.note_change()
    made.autoscaler.probes[access] = FakeProbe(waiting)
    return made


def deployments(made: Fleets, key: Key) -> dict[str, DeploymentState]:
    """Each pool's Deployment, of ``made.replicas`` pods (1 unless set)."""
    state = made.runtime.fleets.get(key)
    if state is None or state.fleet is None:
        return {}
    names = [f"{key.name}-{pool.name}" for pool in state.fleet.pools]
    return {name: DeploymentState(name=name, spec_hash="h", replicas=made.replicas.get(key, 1))
            for name in names}


def with_pool(made: Fleets, key: Key, **changes: Any) -> None:
    """Change the object's pool as a new spec would (bypassing the model's checks)."""
    state = made.runtime.fleets[key]
    fleet = state.fleet
    assert fleet is not None
    pool = fleet.pools[0]
    autoscaling = {k: v for k, v in changes.items() if hasattr(pool.autoscaling, k)}
    pool = dataclasses.replace(
        pool, autoscaling=dataclasses.replace(pool.autoscaling, **autoscaling),
        **{k: v for k, v in changes.items() if k not in autoscaling})
    state.fleet = dataclasses.replace(fleet, pools=(pool,))
    state.generation += 1
    made.runtime.note_change()


def conditions(made: Fleets, key: Key) -> dict[str, dict[str, Any]]:
    status = made.runtime.fleets[key].status
    assert status is not None, "no status was published"
    return {c["type"]: c for c in json.loads(status)["conditions"]}


def with_pools(made: Fleets, key: Key, count: int) -> FleetState:
    """Give ``key``'s fleet ``count`` pools like its first (p0, p1, ...); its state."""
    state = made.runtime.fleets[key]
    assert state.fleet is not None
    first = state.fleet.pools[0]
    state.fleet = dataclasses.replace(state.fleet, pools=tuple(
        dataclasses.replace(first, name=f"p{n}") for n in range(count)))
    made.runtime.note_change()
    return state


def scaled(made: Fleets, key: Key, pool: str = "default") -> list[int]:
    return [n for name, n in made.kube.scaled if name == f"{key.name}-{pool}"]


# A schedule the model (as of this writing) accepts and croniter cannot evaluate.
NEVER = Schedule(name="feb30", cron="0 0 30 2 *", duration_seconds=60, min_replicas=2)


def test_a_pool_that_raises_stops_only_its_object_and_recovers() -> None:
    async def scenario() -> None:
        made = fleets(CANARY, BAD)
        with_pool(made, BAD, schedules=(NEVER,))
        for _ in range(3):
            await made.autoscaler.cycle()         # finishes: run() counts it as done
        assert scaled(made, CANARY) == [5]          # the canary scaled in the first cycle
        assert scaled(made, BAD) == []
        ready = conditions(made, BAD)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "AutoscalingFailed")
        assert "autoscaling pool default" in ready["message"]
        assert made.kube.events.count("AutoscalingFailed") == 1   # once, not per cycle
        assert conditions(made, CANARY)["Ready"]["reason"] != "AutoscalingFailed"

        with_pool(made, BAD, schedules=())       # fixed: the pool scales, its fault goes
        await made.autoscaler.cycle()
        assert scaled(made, BAD) == [5]
        assert made.runtime.fleets[BAD].faults == {}
        assert conditions(made, BAD)["Ready"]["reason"] != "AutoscalingFailed"

    asyncio.run(scenario())


def test_a_fault_of_a_pool_no_longer_autoscaled_goes_with_it() -> None:
    async def scenario() -> None:
        made = fleets(CANARY, BAD)
        with_pool(made, BAD, schedules=(NEVER,))
        await made.autoscaler.cycle()
        assert made.runtime.fleets[BAD].faults
        with_pool(made, BAD, enabled=False)
        await made.autoscaler.cycle()
        assert made.runtime.fleets[BAD].faults == {}
        assert conditions(made, BAD)["Ready"]["reason"] != "AutoscalingFailed"

    asyncio.run(scenario())


def test_a_fault_message_never_shows_the_broker_password() -> None:
    async def scenario() -> None:
        made = fleets(CANARY, BAD, access=SECRET_ACCESS)
        with_pool(made, BAD, schedules=(dataclasses.replace(
            NEVER, cron=f"0 0 30 2 * {SECRET_ACCESS.url}"),))
        await made.autoscaler.cycle()
        assert scaled(made, CANARY) == [5]
        status = made.runtime.fleets[BAD].status or ""
        assert "AutoscalingFailed" in status and PASSWORD not in status

    asyncio.run(scenario())


class BrokenStatus(FakeKube):
    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        if name == BAD.name:
            raise ValueError("a status nobody foresaw")
        await super().patch_status(namespace, name, status)


def test_a_status_that_cannot_be_written_stops_no_other_object() -> None:
    async def scenario() -> None:
        made = fleets(BAD, CANARY)                  # the bad one first
        made.kube.__class__ = BrokenStatus
        await made.autoscaler.cycle()
        await made.autoscaler.cycle()
        assert scaled(made, CANARY) == [5] and scaled(made, BAD) == [5]
        assert conditions(made, CANARY)["Ready"]["reason"] != "AutoscalingFailed"
        assert made.kube.events.count("StatusFailed") == 1

    asyncio.run(scenario())


class PartlyBlind(FakeProbe):
    """Measures every queue but those in ``failed`` (the probes' per-queue contract)."""

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        found = await super().measure(queues)
        return {q: depth for q, depth in found.items() if q not in self.failed}


def test_a_queue_that_cannot_be_measured_holds_only_the_pools_that_consume_it() -> None:
    async def scenario() -> None:
        made = fleets(CANARY, BAD)
        with_pool(made, BAD, queues=("unacked",))
        made.autoscaler.probes[ACCESS] = PartlyBlind(9, failed={
            "unacked": "WRONGTYPE Operation against a key holding the wrong kind of value"})
        await made.autoscaler.cycle()
        await made.autoscaler.cycle()
        assert scaled(made, CANARY) == [5]          # the broker's other queues scale
        assert scaled(made, BAD) == []           # no decision on a partial backlog
        ready = conditions(made, BAD)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "QueueUnmeasured")
        assert "unacked" in ready["message"] and "WRONGTYPE" in ready["message"]
        assert made.kube.events.count("QueueUnmeasured") == 1
        assert made.runtime.fleets[BAD].scaling["default"].backlog is None

        made.autoscaler.probes[ACCESS] = FakeProbe(9)   # measurable again
        await made.autoscaler.cycle()
        assert scaled(made, BAD) == [5]
        assert conditions(made, BAD)["Ready"]["reason"] != "QueueUnmeasured"

    asyncio.run(scenario())


@dataclass
class Workers(FakeControl):
    """Answers ``active`` with what each pod runs; logs each question in ``log``; a
    question waits while ``gate`` is closed."""

    log: list[object] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)
    gate: asyncio.Event | None = None

    async def active(self, hostnames: Collection[str]) -> dict[str, int]:
        self.log.append(("asked", sorted(hostnames)))
        if self.gate is not None:
            await self.gate.wait()
        return {h: self.running[h.partition("@")[2]] for h in hostnames
                if h.partition("@")[2] in self.running}


class LoggedKube(FakeKube):
    log: list[object]

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.log.append(("scaled", name, replicas))
        await super().scale(namespace, name, replicas)


def asking(made: Fleets, control: Workers) -> None:
    made.kube.__class__ = LoggedKube
    made.kube.log = control.log  # type: ignore[attr-defined]
    made.autoscaler.shrinker = Shrinker(made.kube, made.autoscaler.clock,  # type: ignore[arg-type]
                                        control_for=lambda access, options: control)  # type: ignore[arg-type,return-value]


def test_workers_are_asked_after_the_resize_and_only_those_that_can_answer() -> None:
    async def scenario() -> None:
        made = fleets(CANARY, waiting=9)
        made.kube.pods = {"p-run": {}, "p-pending": {}, "p-starting": {}}
        made.kube.pending = {"p-pending"}
        made.kube.not_ready = {"p-starting"}
        control = Workers(running={"p-run": 1})
        asking(made, control)
        await cycle_and_answers(made.autoscaler)
        assert control.log == [("scaled", "mm-default", 5),
                               ("asked", ["default@p-run"])]
        assert made.kube.pods["p-run"] == dict(NOT_SAFE_TO_EVICT)
        assert made.kube.pods["p-pending"] == {} and made.kube.pods["p-starting"] == {}

    asyncio.run(scenario())


class PodPerPool(LoggedKube):
    """One running, ready pod per pool, named after it."""

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        if LABEL_POOL not in labels:
            return {}
        name = f"p-{labels[LABEL_POOL]}"
        return {name: WorkerPod(name)}


def test_one_question_per_broker_for_every_pool_that_has_work() -> None:
    async def scenario() -> None:
        made = fleets(CANARY, BAD, waiting=9)
        with_pool(made, BAD, name="other")
        control = Workers(running={"p-default": 0, "p-other": 0})
        asking(made, control)
        made.kube.__class__ = PodPerPool
        await cycle_and_answers(made.autoscaler)
        assert [entry for entry in control.log if entry[0] == "asked"] == [
            ("asked", ["default@p-default", "other@p-other"])]

    asyncio.run(scenario())


def test_workers_that_do_not_answer_never_hold_a_decision() -> None:
    """The first round of questions is still waiting when the next cycles decide and
    resize; no new round starts meanwhile."""
    async def scenario() -> None:
        made = fleets(CANARY, waiting=2)            # backlog 4: 2 pods
        made.kube.pods = {"p-a": {}}
        control = Workers(running={"p-a": 1}, gate=asyncio.Event())
        asking(made, control)
        # A guard against a hang, not a measure of speed: a cycle waiting on the workers
        # would never finish.
        await asyncio.wait_for(made.autoscaler.cycle(), 30)
        made.replicas[CANARY] = 2
        probe = made.autoscaler.probes[ACCESS]
        assert isinstance(probe, FakeProbe)
        probe.waiting = 9
        await asyncio.wait_for(made.autoscaler.cycle(), 30)
        assert scaled(made, CANARY) == [2, 5]
        assert [e for e in control.log if e[0] == "asked"] == [("asked", ["default@p-a"])]
        assert control.gate is not None
        control.gate.set()
        assert made.autoscaler.asking is not None
        await made.autoscaler.asking
        assert made.kube.pods["p-a"] == dict(NOT_SAFE_TO_EVICT)
        await made.autoscaler.close()

    asyncio.run(scenario())


class Pods:
    """The CoreV1Api's pod listing, of pods in the given phases."""

    def __init__(self, phases: Mapping[str, str]) -> None:
        self.phases = phases

    async def list_namespaced_pod(self, namespace: str, **_: Any) -> client.V1PodList:
        return client.V1PodList(items=[client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(node_name="n1", containers=[]),
            status=client.V1PodStatus(phase=phase, conditions=[
                client.V1PodCondition(type="Ready", status="False")]))
            for name, phase in self.phases.items()])


def test_finished_pods_are_not_the_pools() -> None:
    """An evicted (Failed) or completed pod counts for no ReplicaSet: kept, it stopped
    every scale-down of its pool (``exact_removal`` never passed)."""
    async def scenario() -> dict[str, WorkerPod]:
        kube = Kube.__new__(Kube)
        kube.core = Pods({"p-run": "Running", "p-new": "Pending", "p-evicted": "Failed",
                          "p-done": "Succeeded", "p-lost": "Unknown"})  # type: ignore[assignment]
        return await kube.list_pods("ns", {"a": "b"})

    assert sorted(asyncio.run(scenario())) == ["p-lost", "p-new", "p-run"]



# Time: whatever one object or broker does, the others are decided within the cycle's
# interval. The waits below guard against a hang; none measures speed.
GUARD = 30.0
OTHER_ACCESS = BrokerAccess(transport="redis", url="redis://other:6379/0")


class Hung(FakeProbe):
    """A broker that never answers (an AMQP or SQS probe behind a starved executor)."""

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_broker_that_never_answers_holds_only_its_pools() -> None:
    async def scenario() -> None:
        made = fleets(BAD, CANARY)
        made.runtime.fleets[BAD].access = OTHER_ACCESS
        made.runtime.note_change()
        made.autoscaler.probes[OTHER_ACCESS] = Hung(0)
        await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        assert scaled(made, CANARY) == [5] and scaled(made, BAD) == []
        assert "no answer within" in (made.runtime.fleets[BAD].broker_error or "")
        assert conditions(made, BAD)["Ready"]["reason"] == "BrokerUnreachable"

    asyncio.run(scenario())


def test_an_object_whose_lock_is_held_is_skipped_and_tried_next_cycle() -> None:
    async def scenario() -> None:
        made = fleets(BAD, CANARY)
        lock = made.runtime.locks[BAD]
        await lock.acquire()                        # a long reconcile of the object
        await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        assert scaled(made, CANARY) == [5] and scaled(made, BAD) == []
        assert made.runtime.fleets[BAD].faults == {}  # skipped, not a fault
        lock.release()
        await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        assert scaled(made, BAD) == [5]

    asyncio.run(scenario())


class StuckScale(FakeKube):
    """Scaling BAD's pool never returns; ``entered`` is set when it is asked."""

    entered: asyncio.Event

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        if name.startswith(BAD.name):
            self.entered.set()
            await asyncio.Event().wait()
        await super().scale(namespace, name, replicas)


def stuck(made: Fleets) -> asyncio.Event:
    made.kube.__class__ = StuckScale
    entered = made.kube.entered = asyncio.Event()  # type: ignore[attr-defined]
    return entered


class SlowScale(FakeKube):
    """Scaling BAD's pool takes ``delay`` seconds (a slow apiserver, a drain waiting for
    a worker's reply); ``requests`` counts BAD's scale requests."""

    delay: float
    requests: int

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        if name.startswith(BAD.name):
            self.requests += 1
            await asyncio.sleep(self.delay)
        await super().scale(namespace, name, replicas)


def slow(made: Fleets, delay: float) -> SlowScale:
    made.kube.__class__ = SlowScale
    kube = made.kube
    assert isinstance(kube, SlowScale)
    kube.delay, kube.requests = delay, 0
    return kube


async def late(autoscaler: Autoscaler, key: Key) -> None:
    """Wait for the end of ``key``'s step that goes on beside the cycles."""
    task = autoscaler.stepping[key].task
    assert task is not None
    await asyncio.shield(task)


# Every second, cycles of at most 3 s: a walk waits 0.5 s for a pool's step, which may
# take 3 s in all.
SHORT = Config(poll_seconds=1, cycle_limit_seconds=3)


def test_a_pool_step_slower_than_its_share_goes_on_beside_the_cycles_without_a_fault() -> None:
    """A step that outlasts its share of the interval (here 2 s for 0.5 s,
    so that the cycle after it surely meets it still running) is not cut
    short: the walk goes on without it, the next cycles skip its object until it ends,
    and then its scale stands and its status is written, with no fault and no Warning."""
    async def scenario() -> None:
        made = fleets(BAD, CANARY)
        kube = slow(made, 2.0)
        autoscaler = made.autoscaler
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        assert scaled(made, CANARY) == [5] and scaled(made, BAD) == []
        assert BAD in autoscaler.stepping
        await asyncio.wait_for(autoscaler.cycle(), GUARD)      # while it runs
        assert kube.requests == 1                              # not stepped twice
        await asyncio.wait_for(late(autoscaler, BAD), GUARD)
        assert scaled(made, BAD) == [5]
        assert BAD not in autoscaler.stepping
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        ready = conditions(made, BAD)["Ready"]
        assert ready["reason"] != "AutoscalingFailed", ready
        assert made.runtime.fleets[BAD].faults == {}
        assert "AutoscalingFailed" not in kube.events
        assert scaled(made, BAD) == [5] and kube.requests == 1  # at rest at its size

    asyncio.run(scenario())


class CountedSlowScale(SlowScale):
    """Counts the slow scale requests under way at once."""

    under_way: int = 0
    most: int = 0

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        try:
            await super().scale(namespace, name, replicas)
        finally:
            self.under_way -= 1


def test_steps_beside_the_cycles_are_bounded_on_a_slow_apiserver() -> None:
    """Every fleet's step slower than its share (a slow apiserver): the walk leaves at
    most LATE_AT_ONCE of them beside the cycles and then waits for each, so no more than
    that plus the walk's own OBJECTS_AT_ONCE requests are ever in flight; all end."""
    keys = [Key("containment", f"{BAD.name}{n}") for n in range(3 * LATE_AT_ONCE)]

    async def scenario() -> CountedSlowScale:
        made = fleets(*keys)
        slow(made, 2.0)
        made.kube.__class__ = CountedSlowScale
        assert isinstance(made.kube, CountedSlowScale)
        await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        for step in list(made.autoscaler.stepping.values()):
            assert step.task is not None
            await asyncio.wait_for(asyncio.shield(step.task), GUARD)
        assert sorted(name for name, _ in made.kube.scaled) == sorted(
            f"{key.name}-default" for key in keys)
        return made.kube

    try:
        kube = asyncio.run(scenario())
    finally:
        for key in keys:
            metrics.forget(*key)
    assert LATE_AT_ONCE < kube.most <= LATE_AT_ONCE + OBJECTS_AT_ONCE


# An object of its own namespace, so that the shrinker's one look there is its own.
REMADE = Key("containment-remade", "remade")


class SlowListing(FakeKube):
    """The first listing of pods in REMADE's namespace takes ``delay`` seconds, then
    fails with ``failure`` when one is given."""

    delay: float
    failure: KubeError | None

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        if namespace == REMADE.namespace and self.delay:
            delay, self.delay = self.delay, 0.0
            await asyncio.sleep(delay)
            if self.failure is not None:
                raise self.failure
        return await super().list_pods(namespace, labels)


def slow_listing(made: Fleets, failure: KubeError | None = None) -> None:
    """REMADE's pool's first step lists its pods (an earlier operator left it a drain
    record, as the shrinker's look in its namespace found), slowly."""
    made.kube.__class__ = SlowListing
    assert isinstance(made.kube, SlowListing)
    made.kube.delay, made.kube.failure = 0.8, failure
    shrinker = made.autoscaler._shrinker()
    shrinker.scanned.add(REMADE.namespace)
    shrinker.recorded.add((*REMADE, "default"))


def remade(made: Fleets) -> FleetState:
    """REMADE deleted and created again under its name (a new uid, its first generation);
    the new object's state."""
    made.runtime.forget(REMADE)
    raw = copy.deepcopy(BODY)
    raw["metadata"].update(namespace=REMADE.namespace, name=REMADE.name, uid="u-remade-2")
    state, _ = made.runtime.state(REMADE, "u-remade-2")
    state.fleet, state.access, state.generation = parse(raw), ACCESS, 1
    made.runtime.note_change()
    return state


@pytest.mark.parametrize("failure", [None, KubeError("listing pods", OSError("reset"))],
                         ids=["ends", "fails"])
def test_a_late_step_of_an_object_deleted_meanwhile_leaves_its_successor_alone(
        failure: KubeError | None) -> None:
    """An object deleted and created again under its name while one of its pool's steps
    goes on beside the cycles: the old object's step neither resizes the new object's
    Deployment (same name) nor shows its fault on the new object; the new object is
    decided on its own once the step ended."""
    async def scenario() -> None:
        made = fleets(REMADE, waiting=9 if failure is None else 0)
        slow_listing(made, failure)
        autoscaler = made.autoscaler
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        assert REMADE in autoscaler.stepping
        state = remade(made)
        await asyncio.wait_for(late(autoscaler, REMADE), GUARD)
        assert scaled(made, REMADE) == []
        assert state.faults == {} and "AutoscalingFailed" not in made.kube.events
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        assert scaled(made, REMADE) == ([5] if failure is None else [])
        assert state.faults == {}

    try:
        asyncio.run(scenario())
    finally:
        metrics.forget(*REMADE)


def test_closing_stops_a_late_step_still_writing_its_status() -> None:
    """The operator stops while a step that went on beside the cycles writes its object's
    status (the last thing it does): the write is cancelled with it, not left running
    past the end (past the Lease's release, on a client being closed)."""
    async def scenario() -> None:
        made = fleets(BAD, CANARY)
        slow(made, 0.8)
        writing = asyncio.Event()
        kube = made.kube

        async def hangs(namespace: str, name: str, status: Mapping[str, Any]) -> None:
            if name == BAD.name:
                writing.set()
                await asyncio.Event().wait()

        kube.patch_status = hangs                    # type: ignore[method-assign]
        autoscaler = made.autoscaler
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        task = autoscaler.stepping[BAD].task
        assert task is not None
        await asyncio.wait_for(writing.wait(), GUARD)
        await asyncio.wait_for(autoscaler.close(), GUARD)
        assert task.cancelled()
        assert not made.runtime.locks[BAD].locked()

    asyncio.run(scenario())


def test_a_pool_step_that_overruns_its_limit_is_held_with_a_fault_and_the_cycle_goes_on() -> None:
    async def scenario() -> None:
        made = fleets(BAD, CANARY, config=SHORT)
        stuck(made)
        autoscaler = made.autoscaler
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        assert scaled(made, CANARY) == [5] and scaled(made, BAD) == []
        await asyncio.wait_for(late(autoscaler, BAD), GUARD)  # cancelled at 3 s
        assert not made.runtime.locks[BAD].locked()
        assert BAD not in autoscaler.stepping
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        ready = conditions(made, BAD)["Ready"]
        assert (ready["status"], ready["reason"]) == ("False", "AutoscalingFailed")
        assert "took longer than 3 s" in ready["message"]
        assert made.kube.events.count("AutoscalingFailed") == 1

    asyncio.run(scenario())


def test_a_cancelled_cycle_does_not_starve_the_pools_it_did_not_reach() -> None:
    """A cycle cancelled at its limit while it waits for one pool's step: the step goes
    on to its end (nothing half-done), and the next walk steps the pools the cancelled
    one never reached without stepping the busy object again."""
    async def scenario() -> None:
        made = fleets(BAD, CANARY)                  # BAD is walked first
        entered = stuck(made)
        cycle = asyncio.create_task(made.autoscaler.cycle())
        await asyncio.wait_for(entered.wait(), GUARD)
        cycle.cancel()                               # the cycle limit
        with pytest.raises(asyncio.CancelledError):
            await cycle
        step = made.autoscaler.stepping[BAD].task
        assert step is not None
        entered.clear()
        await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        assert scaled(made, CANARY) == [5]
        assert not entered.is_set() and not step.done()
        await made.autoscaler.close()                # the operator stops: so does the step
        assert step.cancelled() and made.autoscaler.stepping == {}
        assert not made.runtime.locks[BAD].locked()

    asyncio.run(scenario())


def test_a_cancelled_cycle_keeps_the_status_writes_it_did_not_make() -> None:
    async def scenario() -> None:
        made = fleets(CANARY)
        await made.autoscaler.cycle()
        made.autoscaler.probes[ACCESS] = Hung(0)   # the broker goes away...
        writes = asyncio.Event()
        kube = made.kube

        async def hangs(namespace: str, name: str, status: Mapping[str, Any]) -> None:
            writes.set()
            await asyncio.Event().wait()

        kube.patch_status = hangs                    # type: ignore[method-assign]
        cycle = asyncio.create_task(made.autoscaler.cycle())
        await asyncio.wait_for(writes.wait(), GUARD)
        cycle.cancel()                               # ...and the cycle ends while writing
        with pytest.raises(asyncio.CancelledError):
            await cycle
        del kube.patch_status                        # the apiserver answers again
        made.runtime.fleets[CANARY].status = None
        for _ in range(2):
            await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        assert conditions(made, CANARY)["Ready"]["reason"] == "BrokerUnreachable"

    asyncio.run(scenario())


def test_a_failed_status_write_is_not_itself_shown_by_the_next_one() -> None:
    """A write that failed is tried again; the status it then writes does not say
    StatusFailed (Ready would flap False and back for one slow request)."""
    async def scenario() -> None:
        made = fleets(CANARY)
        written: list[str] = []
        failures = [TimeoutError("slow apiserver")]

        async def patch_status(namespace: str, name: str, status: Mapping[str, Any]) -> None:
            if failures:
                raise KubeError("updating status", failures.pop())
            written.append(json.dumps(status))

        made.kube.patch_status = patch_status        # type: ignore[method-assign]
        for _ in range(3):
            await made.autoscaler.cycle()
        assert written, "the status was never written"
        assert not any("StatusFailed" in status for status in written)
        assert made.kube.events.count("StatusFailed") == 1
        assert made.runtime.fleets[CANARY].faults == {}

    asyncio.run(scenario())


class CountedListings(PodPerPool):
    """Counts the pod listings under way at once."""

    under_way: int = 0
    most: int = 0

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.under_way -= 1
        return await super().list_pods(namespace, labels)


def test_the_first_round_of_questions_lists_few_pools_at_once() -> None:
    """After a restart every busy pool is asked at once; its pods are listed a few pools
    at a time, not all together."""
    keys = [Key("containment", f"mm{n}") for n in range(20)]

    async def scenario() -> tuple[CountedListings, int]:
        made = fleets(*keys, waiting=9)
        asking(made, Workers())
        made.kube.__class__ = CountedListings
        await cycle_and_answers(made.autoscaler)
        assert isinstance(made.kube, CountedListings)
        return made.kube, len(made.autoscaler.marked)

    try:
        kube, marked = asyncio.run(scenario())
    finally:
        for key in keys:
            metrics.forget(*key)
    assert marked == len(keys)  # every pool's workers were asked
    assert kube.most <= LISTINGS_AT_ONCE


class CountedLock(asyncio.Lock):
    """A lock that counts the waits for it."""

    waits = 0

    async def acquire(self) -> bool:
        self.waits += 1
        return await super().acquire()


def test_a_busy_object_costs_one_wait_for_its_lock_whatever_its_pools() -> None:
    """Each wait for a held lock takes a share of the interval: an object with many pools
    busy in a long reconcile is given up at its first pool, not at each."""
    async def scenario() -> None:
        made = fleets(BAD, CANARY)
        with_pools(made, BAD, 5)
        lock = made.runtime.locks[BAD] = CountedLock()
        made.autoscaler.unpublished[BAD] = None      # and a status to write
        await lock.acquire()                         # the object's long reconcile
        await asyncio.wait_for(made.autoscaler.cycle(), GUARD)
        assert lock.waits == 2                       # the reconcile's, and one of the cycle
        assert scaled(made, CANARY) == [5]
        assert BAD in made.autoscaler.unpublished    # written once it can be

    asyncio.run(scenario())


def test_a_change_recorded_while_its_status_is_written_is_written_next_cycle() -> None:
    """The round of questions runs beside the cycle: a marks fault it settles while the
    object's status is being written (rendered without it) is still to be written."""
    async def scenario() -> None:
        made = fleets(CANARY)
        autoscaler = made.autoscaler

        async def patch_status(namespace: str, name: str, status: Mapping[str, Any]) -> None:
            autoscaler.unpublished[CANARY] = None    # as _settle_marks records a change

        made.kube.patch_status = patch_status        # type: ignore[method-assign]
        await autoscaler.cycle()
        assert CANARY in autoscaler.unpublished

    asyncio.run(scenario())


def test_an_object_whose_steps_overrun_costs_one_share_per_cycle() -> None:
    """An object whose every pool's step hangs: one goes on beside the cycles until its
    limit, its other pools wait (no fault) and are walked first after it, so each is
    tried in turn while the other fleets scale."""
    async def scenario() -> None:
        made = fleets(BAD, CANARY, config=SHORT)
        state = with_pools(made, BAD, 3)
        stuck(made)
        autoscaler = made.autoscaler
        await asyncio.wait_for(autoscaler.cycle(), GUARD)
        assert scaled(made, CANARY) == [5]
        for n in range(3):
            await asyncio.wait_for(late(autoscaler, BAD), GUARD)
            assert sorted(state.faults) == [f"autoscaling pool p{m}" for m in range(n + 1)]
            await asyncio.wait_for(autoscaler.cycle(), GUARD)
        await autoscaler.close()

    asyncio.run(scenario())
