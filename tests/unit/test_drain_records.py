"""Drains as recorded intent: the shrinker writes its record on the pod before it tells a
worker to stop consuming, and every step of a pool with records reconciles them with the
cluster and the workers. A step that fails half-way (the annotation refused, the control
call failing or cancelled), a leader that takes over, a resume nobody confirmed and a
Secret rotated under a drain all end with every worker either drained and removed or
consuming again. Fakes of the Kube edge and the remote control from test_wiring."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import socket
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from metamapper_operator.autoscale import drain, shrink
from metamapper_operator.autoscale.drain import ControlError
from metamapper_operator.autoscale.drainplan import DELETION_COST, DRAINED_COST, Load, WorkerPod
from metamapper_operator.autoscale.loop import LATE_AT_ONCE, OBJECTS_AT_ONCE, Autoscaler
from metamapper_operator.autoscale.shrink import DRAINING, Known, Outcome, Shrinker
from metamapper_operator.kube import KubeError
from metamapper_operator.model import parse
from metamapper_operator.references import BrokerAccess
from tests.unit.sample import BODY
from tests.unit.test_wiring import ACCESS, KEY, FakeControl, FakeKube, FakeProbe, shrinking

FLEET = parse(BODY)
POOL = FLEET.pools[0]
GRACE = POOL.termination_grace_period_seconds
WALL = 1_800_000_000.0   # the wall clock when the tests start (any fixed time)


@dataclass
class RecordingKube(FakeKube):
    """Counts the pod listings; refuses annotations while ``refuse`` holds; reports the
    pods in ``failed`` as evicted."""

    listings: int = 0
    refuse: bool = False
    unlisted: bool = False   # listing pods fails
    failed: set[str] = field(default_factory=set)
    failed_as: str | None = None   # every pod's phase, when set (Unknown: its node is lost)

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        self.listings += 1
        if self.unlisted:
            raise KubeError(f"listing pods in {namespace}", None)
        pods = await super().list_pods(namespace, labels)
        return {name: dataclasses.replace(pod, phase="Failed", ready=False)
                if name in self.failed else dataclasses.replace(
                    pod, phase=self.failed_as, ready=False) if self.failed_as else pod
                for name, pod in pods.items()}

    async def annotate_pod(self, namespace: str, name: str,
                           annotations: Mapping[str, str | None],
                           labels: Mapping[str, str | None] | None = None) -> None:
        if self.refuse:
            raise KubeError(f"annotating Pod {namespace}/{name}", None)
        await super().annotate_pod(namespace, name, annotations, labels)


@dataclass
class ScriptedControl(FakeControl):
    """A remote control whose stop fails after reaching the workers (a reply lost, a
    timeout), or hangs until ``release`` is set; ``deaf`` workers never confirm a resume."""

    fail_stop: bool = False
    release: asyncio.Event | None = None
    deaf: set[str] = field(default_factory=set)

    async def stop_consuming(self, hostnames: Collection[str], queues: Collection[str]
                             ) -> set[str]:
        confirmed = await super().stop_consuming(hostnames, queues)
        if self.fail_stop:
            raise ControlError("stopping the workers' consumers: TimeoutError")
        if self.release is not None:
            await self.release.wait()
        return confirmed

    async def resume_consuming(self, hostnames: Collection[str], queues: Collection[str]
                               ) -> set[str]:
        confirmed = await super().resume_consuming(hostnames, queues)
        return {host for host in confirmed if host.partition("@")[2] not in self.deaf}


@dataclass
class Pool:
    """One pool's pods, its workers' control, and a shrinker at a controllable time."""

    kube: RecordingKube
    control: ScriptedControl
    time: list[float]
    shrinker: Shrinker
    events: list[str] = field(default_factory=list)

    async def step(self, current: int, target: int, access: BrokerAccess = ACCESS
                   ) -> Outcome:
        async def report(kind: str, reason: str, message: str) -> None:
            self.events.append(reason)
        return await self.shrinker.step(FLEET, POOL, access, current, target, report)

    def later(self, seconds: float) -> None:
        self.time[0] += seconds

    def restarted(self) -> Pool:
        """The same cluster and workers seen by a new operator (a new leader)."""
        return pool_of(self.kube, self.control, self.time)


def pool_of(kube: RecordingKube, control: ScriptedControl, time: list[float]) -> Pool:
    shrinker = Shrinker(kube, lambda: time[0] - WALL,  # type: ignore[arg-type]
                        wall=lambda: time[0],
                        control_for=lambda access, options: control)  # type: ignore[arg-type,return-value]
    return Pool(kube, control, time, shrinker)


def pool(loads: dict[str, Load], annotations: dict[str, dict[str, str]] | None = None
         ) -> Pool:
    """A pool of pods with ``loads``; those with ``annotations`` of a drain carry its
    label too, as an operator writes them."""
    kube = RecordingKube()
    kube.pods = {name: dict((annotations or {}).get(name, {})) for name in loads}
    kube.labels = {name: {DRAINING: "true"} for name, values in kube.pods.items()
                   if DRAINING in values}
    return pool_of(kube, ScriptedControl(dict(loads)), [WALL])


def body_of(name: str, uid: str) -> dict[str, Any]:
    """BODY as another object of the same namespace."""
    raw = copy.deepcopy(BODY)
    raw["metadata"].update(name=name, uid=uid)
    return raw


async def ignore(kind: str, reason: str, message: str) -> None:
    pass


def record(since: float, queues: tuple[str, ...] = POOL.queues) -> str:
    return json.dumps({"since": since, "queues": list(queues)})


def test_the_record_is_written_before_any_worker_is_told_to_stop() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)})
        p.kube.refuse = True
        with pytest.raises(KubeError):
            await p.step(2, 1)
        assert p.control.stopped == []          # nothing acted on without its record
        p.kube.refuse = False
        await p.step(2, 1)
        assert p.control.stopped == ["p-a"] and DRAINING in p.kube.pods["p-a"]
    asyncio.run(scenario())


def test_the_record_says_when_the_drain_started_and_which_queues_it_stopped() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)})
        await p.step(2, 1)
        assert json.loads(p.kube.pods["p-a"][DRAINING]) == {
            "since": WALL, "queues": list(POOL.queues)}
    asyncio.run(scenario())


def test_a_record_is_labelled_so_that_a_new_leader_finds_it_in_one_request() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)})
        await p.step(2, 1)
        assert p.kube.labels["p-a"] == {DRAINING: "true"}
        await p.step(2, 2)
        assert p.kube.labels["p-a"] == {} and p.kube.pods["p-a"] == {}
    asyncio.run(scenario())


def test_a_new_leader_looks_for_records_once_per_namespace() -> None:
    """Not once per pool: at start every pool is stepped, and thousands of listings would
    hold up the first cycle."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        others = [parse(body_of(f"other-{n}", f"u-other-{n}")) for n in range(3)]
        for other in others:
            await p.shrinker.step(other, other.pools[0], ACCESS, 1, 1, ignore)
        assert p.kube.listings == 1             # the namespace's records: none of theirs
        await p.step(2, 2)                      # mm's pool has one: its pods are listed
        assert p.kube.listings == 2 and p.control.resumed == ["p-a"]
        for other in others:
            await p.shrinker.step(other, other.pools[0], ACCESS, 1, 1, ignore)
        await p.step(2, 2)
        assert p.kube.listings == 2
    asyncio.run(scenario())


def test_a_pool_grows_even_when_its_records_cannot_be_looked_for() -> None:
    """Growing loses no task: it never waits on the drains. Shrinking does, and the
    records are looked for again at the next step."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        p.kube.unlisted = True
        outcome = await p.step(2, 3)
        assert outcome.replicas == 3 and not outcome.settled
        with pytest.raises(KubeError):
            await p.step(2, 1)
        p.kube.unlisted = False
        await p.step(3, 3)
        assert p.control.resumed == ["p-a"] and p.kube.pods["p-a"] == {}
    asyncio.run(scenario())


def test_a_worker_stopped_by_a_call_that_then_failed_is_resumed_when_no_longer_shrunk(
        ) -> None:
    """The reply was lost: the worker stopped, the step was held. The pool is wanted at
    its size again: the record makes the next step give the worker its queues back."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)})
        p.control.fail_stop = True
        outcome = await p.step(2, 1)
        assert outcome.replicas == 2 and p.control.stopped == ["p-a"]
        p.control.fail_stop = False
        outcome = await p.step(2, 2)
        assert p.control.resumed == ["p-a"] and p.kube.pods["p-a"] == {}
        assert outcome.settled
    asyncio.run(scenario())


def test_a_stop_that_failed_is_sent_again_and_the_drain_finished() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)})
        p.control.fail_stop = True
        await p.step(2, 1)
        p.control.fail_stop = False
        await p.step(2, 1)                       # stopped again, confirmed; drained
        assert p.control.stopped == ["p-a", "p-a"]
        assert p.kube.pods["p-a"][DELETION_COST] == str(DRAINED_COST)
        assert (await p.step(2, 1)).replicas == 1
    asyncio.run(scenario())


def test_a_step_cancelled_while_stopping_leaves_a_record_the_next_step_resolves() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)})
        p.control.release = asyncio.Event()
        step = asyncio.create_task(p.step(2, 1))
        while not p.control.stopped and not step.done():
            await asyncio.sleep(0)
        step.cancel()                            # the cycle's budget ran out
        with pytest.raises(asyncio.CancelledError):
            await step
        p.control.release.set()
        assert DRAINING in p.kube.pods["p-a"]
        await p.step(2, 2)                       # wanted back: it consumes again
        assert p.control.resumed == ["p-a"] and p.kube.pods["p-a"] == {}
    asyncio.run(scenario())


def test_a_new_leader_resumes_a_predecessors_stray_drain_without_a_size_change() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)},
                 {"p-a": {DRAINING: record(WALL - 5)}})
        outcome = await p.step(2, 2)
        assert p.control.resumed == ["p-a"] and p.kube.pods["p-a"] == {}
        assert outcome.settled and p.shrinker.settled
    asyncio.run(scenario())


def test_a_new_leader_resumes_the_queues_the_record_names() -> None:
    async def scenario() -> None:
        resumed: list[tuple[str, ...]] = []

        class Remembering(ScriptedControl):
            async def resume_consuming(self, hostnames: Collection[str],
                                       queues: Collection[str]) -> set[str]:
                resumed.append(tuple(queues))
                return await super().resume_consuming(hostnames, queues)

        p = pool({"p-a": Load(), "p-b": Load(active=1)},
                 {"p-a": {DRAINING: record(WALL - 5, ("default", "old"))}})
        p = pool_of(p.kube, Remembering(p.control.held), p.time)
        await p.step(2, 2)
        assert resumed == [("default", "old")]
    asyncio.run(scenario())


def test_a_new_leader_keeps_its_predecessors_deadline() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(active=1), "p-b": Load(active=1)},
                 {"p-a": {DRAINING: record(WALL - GRACE + 10)}})
        await p.step(2, 1)
        assert p.control.resumed == [] and p.control.stopped == ["p-a"]  # sent again
        p.later(10)
        await p.step(2, 1)
        assert p.control.resumed == ["p-a"] and "DrainTimedOut" in p.events
    asyncio.run(scenario())


def test_a_legacy_mark_is_a_drain_of_the_pools_queues_started_when_found() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(active=1), "p-b": Load(active=1)},
                 {"p-a": {DRAINING: "true"}})
        await p.step(2, 1)
        p.later(GRACE - 1)
        await p.step(2, 1)
        assert p.control.resumed == []
        p.later(1)
        await p.step(2, 1)
        assert p.control.resumed == ["p-a"]
    asyncio.run(scenario())


def test_an_unconfirmed_resume_keeps_its_record_and_is_sent_again() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)},
                 {"p-a": {DRAINING: record(WALL)}})
        p.control.deaf = {"p-a"}
        outcome = await p.step(2, 2)
        assert p.control.resumed == ["p-a"] and DRAINING in p.kube.pods["p-a"]
        assert not outcome.settled and not p.shrinker.settled
        await p.step(2, 2)
        assert p.control.resumed == ["p-a"]       # not yet due
        p.later(shrink.RESUME_BACKOFF_FIRST)
        await p.step(2, 2)
        assert p.control.resumed == ["p-a", "p-a"]
        p.control.deaf = set()
        p.later(2 * shrink.RESUME_BACKOFF_FIRST)
        outcome = await p.step(2, 2)
        assert p.control.resumed == ["p-a"] * 3 and p.kube.pods["p-a"] == {}
        assert outcome.settled and p.shrinker.settled
        listings = p.kube.listings
        await p.step(2, 2)
        assert p.kube.listings == listings        # settled: nothing listed, nobody asked
    asyncio.run(scenario())


def test_a_timed_out_drain_whose_resume_is_not_confirmed_is_resumed_again() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(active=1), "p-b": Load(active=1)})
        await p.step(2, 1)
        p.control.deaf = {"p-a"}
        p.later(GRACE)
        await p.step(2, 1)
        assert p.control.resumed == ["p-a"] and DRAINING in p.kube.pods["p-a"]
        p.control.deaf = set()
        p.later(shrink.RESUME_BACKOFF_FIRST)
        await p.step(2, 2)
        assert p.control.resumed == ["p-a", "p-a"] and p.kube.pods["p-a"] == {}
    asyncio.run(scenario())


def test_a_pool_without_records_is_looked_at_once() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load()})
        for _ in range(3):
            assert await p.step(2, 2) == Outcome(2)
        assert p.kube.listings == 1 and p.control.resumed == []
    asyncio.run(scenario())


def test_the_control_is_made_again_when_the_broker_credentials_change() -> None:
    async def scenario() -> None:
        rotated = BrokerAccess(transport="redis", url="redis://:new@r:6379/0")
        controls = {ACCESS: ScriptedControl({"p-a": Load(active=1), "p-b": Load(active=1)}),
                    rotated: ScriptedControl({"p-a": Load(active=1), "p-b": Load(active=1)})}
        p = pool({"p-a": Load(active=1), "p-b": Load(active=1)})
        p.shrinker.control_for = lambda access, options: controls[access]  # type: ignore[assignment,return-value]
        await p.step(2, 1)
        assert controls[ACCESS].stopped == ["p-a"]
        await p.step(2, 2, rotated)
        assert controls[rotated].resumed == ["p-a"] and controls[ACCESS].resumed == []
        assert p.kube.pods["p-a"] == {}
    asyncio.run(scenario())


def test_a_pool_whose_workers_hold_only_eta_tasks_still_shrinks() -> None:
    """Tasks waiting for their ETA are unacknowledged messages the worker gives back to the
    broker at its warm shutdown; the drained worker holding only those is removed."""
    async def scenario() -> None:
        p = pool({"p-a": Load(scheduled=2), "p-b": Load(scheduled=1), "p-c": Load(active=1)})
        await p.step(3, 2)
        assert p.control.stopped == ["p-b"]       # nothing running: the cheapest to retire
        assert p.kube.pods["p-b"][DELETION_COST] == str(DRAINED_COST)
        assert (await p.step(3, 2)).replicas == 2
    asyncio.run(scenario())


def test_a_drained_pod_that_was_evicted_is_forgotten_and_another_drained() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(active=1), "p-b": Load(active=1), "p-c": Load()})
        await p.step(3, 2)
        assert p.control.stopped == ["p-c"]
        p.kube.failed = {"p-c"}                   # evicted; its replacement starts
        p.kube.pods["p-d"] = {}
        p.control.held["p-d"] = Load()
        del p.control.held["p-c"]
        outcome = await p.step(3, 2)
        assert p.control.stopped == ["p-c", "p-d"] and outcome.draining == ("p-d",)
        assert (await p.step(3, 2)).replicas == 2
    asyncio.run(scenario())


def test_a_pool_no_longer_scaled_is_resumed_until_confirmed() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(active=1), "p-b": Load(active=1)})
        await p.step(2, 1)
        p.control.deaf = {"p-a"}
        await p.shrinker.abandon(set())
        assert p.control.resumed == ["p-a"] and not p.shrinker.settled
        p.control.deaf = set()
        p.later(shrink.RESUME_BACKOFF_FIRST)
        await p.shrinker.abandon(set())
        assert p.control.resumed == ["p-a", "p-a"] and p.kube.pods["p-a"] == {}
        assert p.shrinker.settled
    asyncio.run(scenario())


def autoscaled(control: ScriptedControl, annotations: dict[str, dict[str, str]]
               ) -> tuple[FakeKube, Autoscaler]:
    """The autoscaler over a pool of two pods with ``annotations``, its workers reached
    through ``control``, its broker asking for both pods."""
    pods = {name: WorkerPod(name, annotations.get(name, {})) for name in ("p-a", "p-b")}
    _runtime, kube, autoscaler, _control, _clock = shrinking(pods, control.held, replicas=2)
    kube.labels = {name: {DRAINING: "true"} for name in annotations}
    assert autoscaler.shrinker is not None
    autoscaler.shrinker.control_for = lambda access, options: control  # type: ignore[assignment,return-value]
    autoscaler.probes[ACCESS] = FakeProbe(4)
    return kube, autoscaler


def test_the_autoscaler_reaches_the_workers_with_the_fleets_current_credentials() -> None:
    async def scenario() -> None:
        rotated = BrokerAccess(transport="redis", url="redis://:new@r:6379/0")
        held = {"p-a": Load(active=1), "p-b": Load(active=1)}
        controls = {ACCESS: ScriptedControl(dict(held)), rotated: ScriptedControl(dict(held))}
        kube, autoscaler = autoscaled(controls[ACCESS], {})
        autoscaler.probes[ACCESS] = FakeProbe(0)
        assert autoscaler.shrinker is not None
        autoscaler.shrinker.control_for = lambda access, options: controls[access]  # type: ignore[assignment,return-value]
        runtime = autoscaler.runtime
        await autoscaler.cycle()
        fleet = runtime.fleets[KEY].fleet
        assert fleet is not None
        autoscaler.clock = lambda: fleet.pools[0].autoscaling.scale_down_stabilization_seconds + 1
        autoscaler.shrinker.clock = autoscaler.clock
        await autoscaler.cycle()
        assert controls[ACCESS].stopped == ["p-a"]
        runtime.fleets[KEY].access = rotated          # the Secret was rotated
        runtime.note_change()
        autoscaler.probes = {rotated: FakeProbe(4)}   # and the pool wants both pods again
        await autoscaler.cycle()
        assert controls[rotated].resumed == ["p-a"] and controls[ACCESS].resumed == []
        assert DRAINING not in kube.pods["p-a"]
    asyncio.run(scenario())


def test_the_autoscaler_asks_again_until_a_resume_is_confirmed() -> None:
    async def scenario() -> None:
        control = ScriptedControl({"p-a": Load(), "p-b": Load(active=1)}, deaf={"p-a"})
        kube, autoscaler = autoscaled(control, {"p-a": {DRAINING: record(WALL)}})
        autoscaler.probes[ACCESS] = FakeProbe(2)    # exactly its 2 pods: the pool rests
        assert autoscaler.shrinker is not None
        time = [0.0]
        autoscaler.shrinker.clock = lambda: time[0]
        await autoscaler.cycle()                    # p-a's record is a stray
        assert control.resumed == ["p-a"] and DRAINING in kube.pods["p-a"]
        time[0] += shrink.RESUME_BACKOFF_FIRST
        await autoscaler.cycle()
        control.deaf = set()
        time[0] += 2 * shrink.RESUME_BACKOFF_FIRST
        await autoscaler.cycle()
        assert control.resumed == ["p-a"] * 3 and DRAINING not in kube.pods["p-a"]
    asyncio.run(scenario())


class Unanswered:
    """Control calls that never return (a broker that accepts and never answers) until
    ``answer`` is set; ``started`` counts the threads stuck in one."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.started = threading.Semaphore(0)

    def app(self, access: BrokerAccess, options: Mapping[str, object]) -> Any:
        return SimpleNamespace(close=lambda: None)

    def active(self, app: Any, hostnames: Any) -> dict[str, int]:
        self.started.release()
        self.answer.wait()
        return {}


def test_control_calls_that_never_return_cannot_starve_the_probes_threads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled call's thread runs on: the calls get threads of their own, a bounded
    number, and are refused while all of them are taken; the default pool (the RabbitMQ
    and SQS probes') stays free."""
    stuck = Unanswered()
    monkeypatch.setattr(drain, "_app", stuck.app)
    monkeypatch.setattr(drain, "_active", stuck.active)
    control = drain.WorkerControl(ACCESS, {})

    async def scenario() -> None:
        calls = [asyncio.create_task(control.active(["default@p"])) for _ in range(40)]
        try:
            await asyncio.wait(calls, timeout=0.5)
            for call in calls:
                call.cancel()
            async with asyncio.timeout(10):   # a guard: before the fix this never runs
                assert await asyncio.to_thread(lambda: "a probe's work") == "a probe's work"
            refused = [c for c in calls if c.done() and not c.cancelled()
                       and isinstance(c.exception(), ControlError)]
            assert 0 < drain.THREADS_PER_BROKER == 40 - len(refused)
            async with asyncio.timeout(10):
                with pytest.raises(ControlError, match="busy"):
                    await control.active(["default@p"])
        finally:
            stuck.answer.set()   # the threads end, and the loop can close
    asyncio.run(scenario())


class OneUnanswered(Unanswered):
    """Control calls to ``broker`` never return until ``answer`` is set; the others'
    answer at once."""

    def __init__(self, broker: BrokerAccess) -> None:
        super().__init__()
        self.broker = broker

    def app(self, access: BrokerAccess, options: Mapping[str, object]) -> Any:
        return SimpleNamespace(access=access, close=lambda: None)

    def active(self, app: Any, hostnames: Any) -> dict[str, int]:
        if app.access == self.broker:
            return super().active(app, hostnames)
        return {host: 0 for host in hostnames}


def test_a_broker_that_never_answers_leaves_threads_for_every_other_broker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls stuck on one broker (its AMQP side blocked, as under a resource alarm)
    take at most that broker's share of the threads: the workers of the other brokers
    are still asked, drained and given their queues back."""
    other = BrokerAccess(transport="redis", url="redis://other:6379/0")
    stuck = OneUnanswered(ACCESS)
    monkeypatch.setattr(drain, "_app", stuck.app)
    monkeypatch.setattr(drain, "_active", stuck.active)
    monkeypatch.setattr(drain, "THREADS", drain.ControlThreads(   # none held by another test
        drain.CONTROL_THREADS, drain.THREADS_PER_BROKER))

    async def scenario() -> None:
        calls = [asyncio.create_task(drain.WorkerControl(ACCESS, {}).active(["default@p"]))
                 for _ in range(drain.CONTROL_THREADS)]
        try:
            await asyncio.wait(calls, timeout=0.5)
            for call in calls:
                call.cancel()
            async with asyncio.timeout(10):
                assert await drain.WorkerControl(other, {}).active(["default@q"]) == {
                    "default@q": 0}
        finally:
            stuck.answer.set()
    asyncio.run(scenario())


def test_as_many_calls_to_one_broker_as_pool_steps_under_way_are_all_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst shrinking many pools of one broker at once: every object stepped side by
    side (loop.OBJECTS_AT_ONCE) gets a thread, so does every step going on beside the
    cycles (loop.LATE_AT_ONCE: a drain waiting for its workers' replies), and the round
    of questions one more (threads busy, not stuck: none is refused)."""
    together = OBJECTS_AT_ONCE + LATE_AT_ONCE + 1
    started = threading.Semaphore(0)
    through = threading.Event()

    def active(app: Any, hostnames: Any) -> dict[str, int]:
        started.release()
        through.wait()
        return {}
    monkeypatch.setattr(drain, "_app", Unanswered().app)
    monkeypatch.setattr(drain, "_active", active)
    monkeypatch.setattr(drain, "THREADS", drain.ControlThreads(   # none held by another test
        drain.CONTROL_THREADS, drain.THREADS_PER_BROKER))

    async def scenario() -> None:
        calls = [asyncio.create_task(drain.WorkerControl(ACCESS, {}).active(["default@p"]))
                 for _ in range(together)]
        try:
            for _ in range(together):   # every call holds a thread at the same moment
                assert await asyncio.to_thread(started.acquire, timeout=10)
        finally:
            through.set()
        assert await asyncio.gather(*calls) == [{}] * together
    asyncio.run(scenario())


def test_a_control_call_to_a_broker_that_never_answers_ends_its_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The control's connections have socket timeouts: a broker that accepts and never
    answers fails the call in its thread, which is free again (kombu's default waits
    forever)."""
    monkeypatch.setattr(drain, "SOCKET_TIMEOUT", 0.2, raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(8)],
                     daemon=True).start()
    port = server.getsockname()[1]
    control = drain.WorkerControl(
        BrokerAccess(transport="redis", url=f"redis://127.0.0.1:{port}/0"), {})

    async def scenario() -> None:
        try:
            with pytest.raises(ControlError):
                await control.active(["default@p"])
            assert drain.THREADS.busy == 0
        finally:   # the connections end (before the fix, the only way the thread could)
            for connection in [*held, server]:
                connection.close()
    asyncio.run(scenario())


def known(access: BrokerAccess | None = ACCESS) -> list[Known]:
    return [Known(FLEET.namespace, FLEET.name, FLEET, access)]


def test_a_predecessors_drain_on_a_pool_not_scaled_is_resumed_with_its_fleets_access(
        ) -> None:
    """Autoscaling off, the fleet paused or suspended: the pool is never stepped, and its
    worker would stay stopped for good."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        await p.shrinker.abandon(set(), known())
        assert p.control.resumed == ["p-a"]
        assert p.kube.pods["p-a"] == {} and p.kube.labels["p-a"] == {}
        assert p.shrinker.settled
    asyncio.run(scenario())


@pytest.mark.parametrize("fleets", [[], known(None)], ids=["not known yet", "no access"])
def test_a_drain_record_of_a_fleet_not_known_or_without_access_waits_for_it(
        fleets: list[Known]) -> None:
    """An operator that just started knows objects one by one; removing the record of a
    fleet it has not reconciled yet would leave a stopped worker nobody remembers."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        other = parse(body_of("other", "u-other"))
        await p.shrinker.step(other, other.pools[0], ACCESS, 1, 1, ignore)   # finds it
        await p.shrinker.abandon({(other.uid, "default")}, fleets)
        assert p.control.resumed == []
        assert DRAINING in p.kube.pods["p-a"]
        await p.shrinker.abandon({(other.uid, "default")}, known())   # known now
        assert p.control.resumed == ["p-a"]
        assert p.kube.pods["p-a"] == {} and p.kube.labels["p-a"] == {}
        assert p.shrinker.settled
    asyncio.run(scenario())


def test_a_drain_record_of_a_pool_that_left_the_spec_is_removed() -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        other = parse(body_of("other", "u-other"))
        await p.shrinker.step(other, other.pools[0], ACCESS, 1, 1, ignore)   # finds it
        raw = body_of(FLEET.name, FLEET.uid)
        raw["spec"]["pools"][0]["name"] = "renamed"
        renamed = parse(raw)
        await p.shrinker.abandon({(other.uid, "default")},
                                 [Known(FLEET.namespace, FLEET.name, renamed, ACCESS)])
        assert p.control.resumed == []
        assert p.kube.pods["p-a"] == {} and p.kube.labels["p-a"] == {}
        assert p.shrinker.settled
    asyncio.run(scenario())


def test_a_resume_nobody_confirms_is_given_up_once_with_a_warning() -> None:
    """worker_enable_remote_control off: the workers never answer. The record goes after
    RESUME_LIMIT, one Warning says so, and nobody is asked again."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        p.control.deaf = {"p-a"}
        steps = 0
        while DRAINING in p.kube.pods["p-a"] and steps < 1000:
            await p.step(2, 2)
            p.later(30)
            steps += 1
        assert p.events == ["DrainAbandoned"] and p.shrinker.settled
        assert p.time[0] - WALL >= shrink.RESUME_LIMIT
        asked, listed = len(p.control.resumed), p.kube.listings
        assert asked < steps and listed < steps   # backed off, not every step
        for _ in range(5):
            await p.step(2, 2)
            p.later(600)
        assert len(p.control.resumed) == asked and p.events == ["DrainAbandoned"]
    asyncio.run(scenario())


@pytest.mark.parametrize("pod", [{"not_ready": {"p-a"}}, {"unknown": True}],
                         ids=["not ready", "phase Unknown"])
def test_a_worker_that_cannot_answer_is_not_asked_and_its_pool_rarely_listed(
        pod: dict[str, Any]) -> None:
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load(active=1)}, {"p-a": {DRAINING: record(WALL)}})
        p.kube.not_ready = pod.get("not_ready", set())
        if pod.get("unknown"):
            p.kube.failed_as = "Unknown"
        for _ in range(20):
            await p.step(2, 2)
            p.later(1)
        assert p.control.resumed == [] and DRAINING in p.kube.pods["p-a"]
        assert p.kube.listings <= 4     # the namespace, then the pool at 0, 10 and 30 s
        p.kube.not_ready, p.kube.failed_as = set(), None
        p.later(shrink.RESUME_BACKOFF_MAX)
        await p.step(2, 2)
        assert p.control.resumed == ["p-a"] and DRAINING not in p.kube.pods["p-a"]
    asyncio.run(scenario())


def test_a_shrinking_pool_whose_workers_never_answer_gives_its_records_up() -> None:
    """A worker whose queues are being given back is not picked again: picking it would
    write its record anew and the resume would never reach its limit."""
    async def scenario() -> None:
        p = pool({"p-a": Load(), "p-b": Load()})
        p.control.held, p.control.deaf = {}, {"p-a", "p-b"}   # nobody answers
        for _ in range(200):
            await p.step(2, 1)
            p.later(30)
            if "DrainAbandoned" in p.events:
                break
        assert p.events == ["DrainTimedOut", "DrainAbandoned"]
        assert "p-b" not in p.control.stopped   # one worker out of service at a time
    asyncio.run(scenario())
