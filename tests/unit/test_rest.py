"""Pools at rest cost no policy work and no API request; the policy's windows still hold
when they wake (wired over the small fakes of test_wiring)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
from typing import Any

import kopf
import pytest

from metamapper_operator import handlers
from metamapper_operator.autoscale import loop
from metamapper_operator.autoscale.drainplan import Load
from metamapper_operator.autoscale.policy import decide
from metamapper_operator.autoscale.shrink import Shrinker
from metamapper_operator.brokers.base import QueueDepth
from metamapper_operator.children import Child
from metamapper_operator.coalescing import Coalescer
from metamapper_operator.config import Config
from metamapper_operator.model import Schedule, parse
from metamapper_operator.references import SecretCache
from metamapper_operator.state import SCALE_SETTLE_SECONDS, Key
from metamapper_operator.status import DeploymentState, Fault
from tests.unit.sample import BODY
from tests.unit.test_wiring import ACCESS, KEY, FakeControl, FakeKube, FakeProbe, runtime_of, setup


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the policy's decisions made by the loop."""
    calls: list[int] = []

    def counted(*args: Any) -> Any:
        calls.append(1)
        return decide(*args)

    monkeypatch.setattr(loop, "decide", counted)
    return calls


def test_a_pool_at_rest_costs_no_decision_and_no_request(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    async def scenario() -> None:
        _, kube, autoscaler = setup(waiting=0, replicas=1)
        autoscaler.clock = clock = Clock()
        decisions = counting(monkeypatch)
        await autoscaler.cycle()
        first, statuses = len(decisions), kube.statuses
        assert first == 1 and statuses == 1
        for _ in range(100):
            clock.now += 5
            await autoscaler.cycle()
        assert len(decisions) == first and kube.statuses == statuses and not kube.scaled

        autoscaler.probes[ACCESS] = FakeProbe(9)   # a change wakes the pool at once
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 5)] and len(decisions) > first

    asyncio.run(scenario())


def test_series_are_walked_only_when_the_pools_or_brokers_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeping the series of the pools that exist walks every series: at rest, with
    thousands of pools, the cycles that find the same pools must not pay for it."""
    async def scenario() -> None:
        runtime, _, autoscaler = setup(waiting=0, replicas=1)
        walks: list[set[str]] = []
        real = loop.metrics.retain
        monkeypatch.setattr(loop.metrics, "retain", lambda pools, brokers: (
            walks.append({s.pool for s in pools}), real(pools, brokers)))
        for _ in range(20):
            await autoscaler.cycle()
        assert walks == [{"default"}]
        runtime.forget(KEY)   # the object is gone: its pools go from the next cycle's set
        await autoscaler.cycle()
        assert walks == [{"default"}, set()]

    asyncio.run(scenario())


def test_a_pool_at_rest_sets_its_gauges_again_only_when_a_figure_changed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        _, _, autoscaler = setup(waiting=0, replicas=1)
        recorded: list[int] = []
        real = loop.record_pool
        monkeypatch.setattr(loop, "record_pool",
                            lambda *args: (recorded.append(1), real(*args)))
        for _ in range(20):
            await autoscaler.cycle()
        assert len(recorded) == 1 and ("u-1", "default") in autoscaler.resting

        class Aging(FakeProbe):   # the same counts, a message waiting longer each cycle
            age = 0.0

            async def measure(self, queues: Any) -> dict[str, QueueDepth]:
                self.age += 5
                return {q: QueueDepth(waiting=0, in_flight=0, oldest_age=self.age)
                        for q in queues}

        autoscaler.probes[ACCESS] = Aging(0)
        for _ in range(3):
            await autoscaler.cycle()
        assert len(recorded) == 4 and ("u-1", "default") in autoscaler.resting

    asyncio.run(scenario())


def test_the_stabilization_window_holds_after_a_long_rest() -> None:
    """At 5 pods for 1,000 s at rest, then idle: the 60 s window counts from the last
    cycle of the rest, as if every cycle had been decided."""
    async def scenario() -> None:
        _, kube, autoscaler = setup(waiting=5, replicas=5)   # 10 / 2 per pod: 5 pods
        autoscaler.clock = clock = Clock()
        pods = [f"p-{n}" for n in range(5)]
        kube.pods = {pod: {} for pod in pods}
        control = FakeControl(dict.fromkeys(pods, Load()))
        autoscaler.shrinker = Shrinker(kube, autoscaler.clock,  # type: ignore[arg-type]
                                       control_for=lambda access, options: control)  # type: ignore[arg-type,return-value]
        for _ in range(200):
            await autoscaler.cycle()
            clock.now += 5
        assert not kube.scaled
        assert ("u-1", "default") in autoscaler.resting

        autoscaler.probes[ACCESS] = FakeProbe(0)
        await autoscaler.cycle()
        clock.now += 50
        await autoscaler.cycle()
        assert not kube.scaled and not control.stopped   # held by the window: no drain
        clock.now += 15
        for _ in range(2):
            await autoscaler.cycle()
        # Down by a step: 25 % of 5, rounded up.
        assert kube.scaled == [("mm-default", 3)] and len(control.stopped) == 2

    asyncio.run(scenario())


def test_a_schedule_window_is_evaluated_only_when_it_can_change(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        runtime, kube, autoscaler = setup(waiting=0, replicas=1)
        state = runtime.fleets[KEY]
        assert state.fleet is not None
        pool = state.fleet.pools[0]
        schedules = (Schedule("warm", "0 8 * * *", 600, 3),)
        pool = dataclasses.replace(pool, autoscaling=dataclasses.replace(
            pool.autoscaling, schedules=schedules))
        state.fleet = dataclasses.replace(state.fleet, pools=(pool,))
        wall = {"now": datetime.datetime(2026, 11, 28, 7, 0, tzinfo=datetime.UTC)}
        autoscaler.wall = lambda: wall["now"]
        evaluated: list[int] = []
        real = loop.active_window
        monkeypatch.setattr(loop, "active_window",
                            lambda *a: evaluated.append(1) or real(*a))
        for _ in range(50):
            await autoscaler.cycle()
            wall["now"] += datetime.timedelta(seconds=5)
        assert len(evaluated) == 1 and not kube.scaled
        wall["now"] = datetime.datetime(2026, 11, 28, 8, 0, tzinfo=datetime.UTC)
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 3)] and len(evaluated) == 2
        assert runtime.fleets[KEY].scaling["default"].window is not None

    asyncio.run(scenario())


def test_a_resync_skips_only_objects_whose_inputs_did_not_change() -> None:
    async def scenario() -> None:
        kube = FakeKube()
        runtime = runtime_of(kube, Config(secret_ttl_seconds=300))
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        body = kopf.Body(raw)
        deployments = {"mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=1)}
        await handlers.reconcile(body, runtime, deployments, {})
        assert handlers.unchanged(runtime, KEY, handlers.inputs_of(body, deployments, {}))

        resized = {"mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=3)}
        assert not handlers.unchanged(runtime, KEY, handlers.inputs_of(body, resized, {}))
        annotated = copy.deepcopy(raw)
        annotated["metadata"]["annotations"] = {"autoscaling.metamapper.io/paused": "true"}
        assert not handlers.unchanged(runtime, KEY, handlers.inputs_of(
            kopf.Body(annotated), deployments, {}))
        runtime.fleets[KEY].faults[handlers.RECONCILE] = Fault(
            step=handlers.RECONCILE, reason="ApplyFailed", message="apply failed")
        assert not handlers.unchanged(runtime, KEY, handlers.inputs_of(body, deployments, {}))
        del runtime.fleets[KEY].faults[handlers.RECONCILE]

        # A Secret that is missing is looked for again on every resync (the operator does
        # not watch Secrets: one created later must be found)...
        secret = copy.deepcopy(raw)
        secret["spec"]["broker"] = {"urlSecretRef": {"name": "broker"}}
        await handlers.reconcile(kopf.Body(secret), runtime, deployments, {})
        inputs = handlers.inputs_of(kopf.Body(secret), deployments, {})
        assert runtime.fleets[KEY].invalid and not handlers.unchanged(runtime, KEY, inputs)

        # ... and one that was read, once it may have changed.
        async def found(namespace: str, name: str) -> dict[str, str]:
            return {"url": "redis://broker:6379/0"}

        runtime.secrets = SecretCache(found, 300)
        runtime.applied.clear()   # what the first reconcile applied is indexed by now
        await handlers.reconcile(kopf.Body(secret), runtime, deployments, {})
        assert not runtime.fleets[KEY].invalid and handlers.unchanged(runtime, KEY, inputs)
        runtime.fleets[KEY].reconciled_at -= 301
        assert not handlers.unchanged(runtime, KEY, inputs)
        assert handlers.reads_secrets(parse(secret))
        assert not handlers.reads_secrets(parse(raw))

    asyncio.run(scenario())


def test_a_quiet_cycle_reads_no_pool() -> None:
    """With every pool at rest and nothing changed, a cycle measures the broker and
    stops: its cost does not grow with the number of pools."""
    async def scenario() -> None:
        _, kube, autoscaler = setup(waiting=0, replicas=1)
        reads: list[Any] = []
        indexed = autoscaler.deployments_of
        autoscaler.deployments_of = lambda key: (reads.append(key), indexed(key))[1]
        probe = FakeProbe(0)
        autoscaler.probes[ACCESS] = probe
        await autoscaler.cycle()
        await autoscaler.cycle()   # the first found the pool; this one finds it at rest
        assert autoscaler.quiet is not None
        before = len(reads)
        for _ in range(20):
            await autoscaler.cycle()
        assert len(reads) == before and autoscaler.quiet_at is not None

        probe.waiting = 9   # the broker's figures changed: every pool is decided again
        await autoscaler.cycle()
        assert len(reads) > before and kube.scaled == [("mm-default", 5)]

    asyncio.run(scenario())


def test_a_change_of_the_state_ends_the_quiet() -> None:
    """A Deployment event (or a reconcile, or an object gone) bumps the state's revision;
    a size the operator set keeps the cycles walking until the index may show it."""
    async def scenario() -> None:
        runtime, kube, autoscaler = setup(waiting=2, replicas=2)   # 4 / 2 per pod: 2 pods
        runtime.clock = clock = Clock()
        sizes = {"mm-default": 2}
        reads: list[Key] = []

        def indexed(key: Key) -> dict[str, DeploymentState]:
            reads.append(key)
            return {name: DeploymentState(name=name, spec_hash="h", replicas=n)
                    for name, n in sizes.items()}

        autoscaler.deployments_of = indexed
        for _ in range(3):
            await autoscaler.cycle()
        assert autoscaler.quiet is not None and not kube.scaled

        sizes["mm-default"] = 1   # scaled down by someone; the event has not come yet
        walked = len(reads)
        await autoscaler.cycle()
        assert len(reads) == walked and not kube.scaled
        runtime.note_change()     # the Deployment event
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 2)]

        walked = len(reads)       # the index still shows 1: walk until it may show 2
        await autoscaler.cycle()
        assert len(reads) > walked
        sizes["mm-default"] = 2
        clock.now += SCALE_SETTLE_SECONDS
        runtime.note_change()
        await autoscaler.cycle()
        await autoscaler.cycle()
        walked = len(reads)
        await autoscaler.cycle()
        assert len(reads) == walked and kube.scaled == [("mm-default", 2)]

    asyncio.run(scenario())


def test_a_reconcile_and_a_deployment_event_bump_the_revision() -> None:
    async def scenario() -> None:
        kube = FakeKube()
        runtime = runtime_of(kube)
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        deployments = {"mm-default": DeploymentState(name="mm-default", spec_hash="h",
                                                     replicas=1)}
        await handlers.reconcile(kopf.Body(raw), runtime, deployments, {})
        after_reconcile = runtime.revision
        assert after_reconcile > 0
        readiness: Coalescer[Key] = Coalescer(lambda key: asyncio.sleep(0))
        handlers.child_changed(runtime, readiness, Child(KEY, "Deployment", "mm-default", "h"))
        assert runtime.revision > after_reconcile
        bumped = runtime.revision
        runtime.forget(KEY)
        assert runtime.revision > bumped

    asyncio.run(scenario())
