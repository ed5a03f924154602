"""A burst on many fleets at once: their pools are stepped side by side, at most
``loop.OBJECTS_AT_ONCE`` objects at a time, the fleets with messages waiting before the
quiet ones, and a patch that fails stays its pool's fault while every other pool is
scaled in the same cycle (wired over the small fakes of test_wiring; the real thing:
bench/churn.py's burst phases)."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from metamapper_operator.autoscale import loop
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.config import Config
from metamapper_operator.kube import KubeError
from metamapper_operator.model import parse
from metamapper_operator.references import BrokerAccess
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY
from tests.unit.test_wiring import FakeKube, FakeProbe, runtime_of

BOUND = loop.OBJECTS_AT_ONCE


@dataclass
class GatedKube(FakeKube):
    """An apiserver that holds the requests passing :meth:`gate` until ``together`` of
    them are in flight, then lets them all through; ``most`` is the most in flight at
    once."""

    together: int = BOUND
    in_flight: int = 0
    most: int = 0
    _through: asyncio.Event = field(default_factory=asyncio.Event)

    async def gate(self) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight == self.together:
            self._through.set()
        await self._through.wait()
        self.in_flight -= 1
        if self.in_flight == 0:
            self._through.clear()


@dataclass
class CrowdedKube(GatedKube):
    """Holds every scale patch at the gate: a walk that sends one patch at a time never
    gets an answer, and fails its steps at their time limit. Refuses the patches of the
    objects named in ``refused``. Logs every request, in order."""

    refused: set[str] = field(default_factory=set)
    log: list[tuple[str, str]] = field(default_factory=list)

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.log.append(("scale", namespace))
        if namespace in self.refused:
            raise KubeError(f"scaling {namespace}/{name}",
                            RuntimeError("the apiserver refused it"))
        await self.gate()
        await super().scale(namespace, name, replicas)

    async def list_pods(self, namespace: str, labels: Any) -> Any:
        self.log.append(("list pods", namespace))
        await asyncio.sleep(0)   # a request: the other steps go on meanwhile
        return await super().list_pods(namespace, labels)


def fleets(count: int, kube: GatedKube, bursting: set[int], namespace: str | None = None
           ) -> tuple[Runtime, Autoscaler]:
    """``count`` reconciled fleets, each on a broker of its own and in a namespace of its
    own (or all in ``namespace``), each with one pool at 1 pod; nine messages wait on the
    queues of those in ``bursting``."""
    runtime = runtime_of(kube, Config(poll_seconds=1))
    autoscaler = Autoscaler(runtime, lambda key: {f"{key.name}-default": DeploymentState(
        name=f"{key.name}-default", spec_hash="h", replicas=1)})
    for n in range(count):
        key = Key(namespace, f"mm-{n:02d}") if namespace else Key(f"ns-{n:02d}", "mm")
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=key.namespace, name=key.name, uid=f"u-{n}")
        access = BrokerAccess(transport="redis", url=f"redis://r:6379/{n}")
        state, _ = runtime.state(key, f"u-{n}")
        state.fleet, state.access, state.generation = parse(raw), access, 3
        state.status = "{}"  # as its reconcile published it
        autoscaler.probes[access] = FakeProbe(9 if n in bursting else 0)
    runtime.note_change()
    return runtime, autoscaler


def test_the_pools_of_many_bursting_fleets_are_patched_side_by_side_within_the_bound(
        ) -> None:
    async def scenario() -> None:
        kube = CrowdedKube()
        count = 2 * BOUND
        runtime, autoscaler = fleets(count, kube, set(range(count)))
        await autoscaler.cycle()
        assert kube.most == BOUND
        assert sorted(kube.scaled) == [("mm-default", 5)] * count
        assert all(not state.faults for state in runtime.fleets.values())

    asyncio.run(scenario())


def test_a_refused_patch_stays_its_pools_while_the_others_go_out() -> None:
    async def scenario() -> None:
        kube = CrowdedKube(refused={"ns-03"})
        count = BOUND + 1
        runtime, autoscaler = fleets(count, kube, set(range(count)))
        await autoscaler.cycle()
        assert len(kube.scaled) == BOUND
        refused = runtime.fleets[Key("ns-03", "mm")]
        assert [fault.reason for fault in refused.faults.values()] == ["AutoscalingFailed"]
        assert "refused" in next(iter(refused.faults.values())).message
        assert all(not state.faults for key, state in runtime.fleets.items()
                   if key.namespace != "ns-03")
        assert kube.statuses == count   # every status, the refused pool's fault included

    asyncio.run(scenario())


def test_a_bursting_fleet_is_scaled_before_the_quiet_ones_are_looked_at() -> None:
    """After a restart every pool is new to the autoscaler: the quiet ones cost their
    first look (their namespace's pods listed for the drain records an earlier process
    left), the one created last has messages waiting. Its step starts first, and its
    patch does not wait for the quiet ones' looks."""
    async def scenario() -> None:
        kube = CrowdedKube(together=1)
        count = 3 * BOUND
        _, autoscaler = fleets(count, kube, {count - 1})
        await autoscaler.cycle()
        burst = f"ns-{count - 1:02d}"
        assert kube.scaled == [("mm-default", 5)]
        assert kube.log[0] == ("list pods", burst)
        looks = [n for n, (request, namespace) in enumerate(kube.log)
                 if request == "list pods" and namespace != burst]
        assert len(looks) == count - 1 and kube.log.index(("scale", burst)) < looks[-1]

    asyncio.run(scenario())


def test_pools_of_one_namespace_stepped_side_by_side_look_for_drain_records_once() -> None:
    """An earlier process's drain records are looked for once per namespace, at the
    first step of one of its pools, however many are stepped at the same moment; the
    lock that makes it once is not kept after (10,000 namespaces would keep 10,000)."""
    async def scenario() -> None:
        kube = CrowdedKube()
        _, autoscaler = fleets(2 * BOUND, kube, set(), namespace="shared")
        await autoscaler.cycle()
        assert kube.log == [("list pods", "shared")]
        assert not autoscaler._shrinker().scanning   # nothing kept per namespace looked at

    asyncio.run(scenario())


def test_pools_the_last_walk_left_unreached_are_walked_with_the_bursting_ones() -> None:
    """A walk cancelled at its limit leaves pools unreached (a quiet one to scale down, a
    drain to finish): the next walk takes them first with the bursts, not after every
    busy pool, so the same tail does not lose every cycle."""
    async def scenario() -> None:
        kube = CrowdedKube(together=1)
        count = 2 * BOUND
        quiet = count - 1
        _, autoscaler = fleets(count, kube, set(range(quiet)))
        autoscaler.unreached = {(f"u-{quiet}", "default"): None}
        await autoscaler.cycle()
        assert kube.log[0] == ("list pods", f"ns-{quiet:02d}")

    asyncio.run(scenario())


@dataclass
class SurprisingKube(CrowdedKube):
    """Its events of the objects in ``surprising`` fail in a way nobody foresaw."""

    surprising: set[str] = field(default_factory=set)

    async def event(self, involved: Any, type: str, reason: str, message: str) -> None:
        if involved["namespace"] in self.surprising:
            raise RuntimeError("nobody foresaw this")
        await super().event(involved, type, reason, message)


def test_a_failure_escaping_one_objects_step_stays_with_that_object() -> None:
    """Whatever escapes one object's step (a defect) is that object's: the objects
    stepped beside it are scaled and their statuses written in the same cycle, and the
    pools of the failed one are walked first next cycle."""
    async def scenario() -> None:
        kube = SurprisingKube(refused={"ns-03"}, surprising={"ns-03"}, together=1)
        count = BOUND + 1
        _, autoscaler = fleets(count, kube, set(range(count)))
        await autoscaler.cycle()
        assert len(kube.scaled) == BOUND
        assert kube.statuses == BOUND       # every other object's status
        assert ("u-3", "default") in autoscaler.unreached

    asyncio.run(scenario())


def test_the_round_of_questions_asks_a_few_brokers_at_a_time() -> None:
    """One broadcast per broker, a few brokers at a time: a round over many brokers
    cannot take every worker-control thread from the walk's drains and resumes."""
    kube = CrowdedKube()
    _, autoscaler = fleets(1, kube, set())
    asking = most = 0

    async def listed(question: Any, *_: Any) -> Any:
        return SimpleNamespace(broker=question)

    async def broadcast(pools: Any) -> dict[str, int]:
        nonlocal asking, most
        asking += 1
        most = max(most, asking)
        await asyncio.sleep(0)
        asking -= 1
        return {}

    async def mark(found: Any, active: Any) -> None:
        pass

    autoscaler._listed = listed  # type: ignore[method-assign]
    autoscaler._broadcast = broadcast  # type: ignore[method-assign]
    autoscaler._mark = mark  # type: ignore[method-assign]
    asyncio.run(autoscaler._mark_running(list(range(3 * loop.BROADCASTS_AT_ONCE))))
    assert most == loop.BROADCASTS_AT_ONCE


@dataclass
class CrowdedStatusKube(GatedKube):
    """Holds every status patch at the gate, as CrowdedKube holds the scale patches."""

    async def patch_status(self, namespace: str, name: str, status: Any) -> None:
        await self.gate()
        await super().patch_status(namespace, name, status)


def test_the_statuses_of_many_fleets_are_written_side_by_side_within_the_bound() -> None:
    async def scenario() -> None:
        kube = CrowdedStatusKube()
        count = 2 * BOUND
        _, autoscaler = fleets(count, kube, set(range(count)))
        async with asyncio.timeout(10):   # a guard: written one at a time, none goes out
            await autoscaler.cycle()
        assert kube.statuses == count and kube.most == BOUND

    asyncio.run(scenario())
