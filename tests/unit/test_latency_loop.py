"""The latency target wired into the autoscaling cycle (over the small fakes of
test_wiring): each cycle feeds the estimator the pool's backlog and its Deployment's ready
pods, sizes the pool from the estimate and shows it in status."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from typing import Any

from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.config import Config
from metamapper_operator.model import parse
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY, settled
from tests.unit.test_wiring import ACCESS, KEY, FakeKube, FakeProbe, runtime_of


class Pool:
    """One fleet whose pool "default" (queues default and checks) has a latency target
    of 30 s, a backlog target of 100 per pod until a throughput is measured, and up to 20
    pods; a clock the test moves, and a Deployment it shapes."""

    def __init__(self, autoscaling: dict[str, Any] | None = None) -> None:
        """``autoscaling`` given: the pool's, as the spec sets it (up to 20 pods)."""
        self.now = 1000.0
        self.deployment = settled("mm-default", 1)
        self.kube = FakeKube()
        self.runtime = runtime_of(self.kube, Config(poll_seconds=1))
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        if autoscaling is not None:
            raw["spec"]["pools"][0].update(maxReplicas=20, autoscaling=autoscaling)
        fleet = parse(raw)
        pool = fleet.pools[0]
        if autoscaling is None:
            pool = dataclasses.replace(pool, max_replicas=20, autoscaling=dataclasses.replace(
                pool.autoscaling, target_wait_seconds=30.0, target_backlog_per_replica=100))
        state, _ = self.runtime.state(KEY, "u-1")
        state.fleet = dataclasses.replace(fleet, pools=(pool,))
        state.access, state.generation = ACCESS, 3
        self.runtime.note_change()
        self.autoscaler = Autoscaler(self.runtime, self.deployments, clock=lambda: self.now)

    def deployments(self, key: Key) -> dict[str, DeploymentState]:
        return {"mm-default": self.deployment} if key in self.runtime.fleets else {}

    async def probe(self, after: float, waiting: int, ready: int, pods: str = "h") -> None:
        """A cycle ``after`` seconds on that finds ``waiting`` on each of the two queues and
        ``ready`` pods ready (all of them asked for), of the pod template ``pods`` (its
        Deployment's spec hash)."""
        self.now += after
        self.deployment = dataclasses.replace(settled("mm-default", ready), spec_hash=pods)
        self.autoscaler.probes[ACCESS] = FakeProbe(waiting)
        await self.autoscaler.cycle()

    def throughput(self) -> float | None:
        return self.runtime.fleets[KEY].scaling["default"].throughput_per_pod


def test_the_cycle_measures_the_throughput_per_ready_pod_and_sizes_the_pool_from_it(
        ) -> None:
    async def scenario() -> None:
        pool = Pool()
        await pool.probe(0, 100, 2)           # backlog 200 with 2 pods ready
        assert pool.throughput() is None
        assert pool.runtime.fleets[KEY].scaling["default"].policy == "backlog"
        assert not pool.kube.scaled           # 100 per pod: the 2 it has
        await pool.probe(5, 95, 2)            # 10 done in 5 s by 2 pods
        assert pool.throughput() == 1.0
        # 1 message per second and pod: 2 at once (its concurrency) and 30 more within
        # 30 s; a backlog of 190 needs 6 pods.
        assert pool.kube.scaled[-1] == ("mm-default", 6)
        assert pool.runtime.fleets[KEY].scaling["default"].policy == "serviceTime"

    asyncio.run(scenario())


def test_a_span_in_which_pods_turned_ready_is_not_counted() -> None:
    """The 60 messages three new workers take at once as their pods turn ready (with
    countInFlight off they leave the backlog) are not throughput: counted, they made the
    estimate 1.9 /s, and the pool smaller by as much."""
    async def scenario() -> None:
        pool = Pool()
        await pool.probe(0, 100, 2)
        await pool.probe(5, 95, 2)            # 1 /s per pod
        await pool.probe(5, 60, 5)            # 10 done, 60 prefetched as 3 pods turn ready
        assert pool.throughput() == 1.0
        await pool.probe(5, 55, 5)            # the first interval after: not counted either
        await pool.probe(5, 30, 5)            # 50 done by 5 pods in 5 s: 2 /s per pod
        assert pool.throughput() == 1.0       # the lower median of 1 and 2

    asyncio.run(scenario())


def test_the_status_shows_the_arrivals_and_a_wait_of_0_sizes_from_the_backlog() -> None:
    async def scenario() -> None:
        pool = Pool()
        await pool.probe(0, 100, 2)
        await pool.probe(5, 95, 2)            # 1 /s per pod
        await pool.probe(5, 100, 2)           # +10 and 10 finished: 20 in the last minute
        scale = pool.runtime.fleets[KEY].scaling["default"]
        assert (scale.policy, scale.arrival_rate) == ("serviceTime", 0.333)

        off = Pool()
        state = off.runtime.fleets[KEY]
        assert state.fleet is not None
        pools = tuple(dataclasses.replace(p, autoscaling=dataclasses.replace(
            p.autoscaling, target_wait_seconds=0.0)) for p in state.fleet.pools)
        state.fleet = dataclasses.replace(state.fleet, pools=pools)
        await off.probe(0, 100, 2)
        await off.probe(5, 95, 2)
        scale = off.runtime.fleets[KEY].scaling["default"]
        assert (scale.policy, scale.throughput_per_pod) == ("backlog", None)
        assert not off.kube.scaled            # 190 within 100 per pod: the 2 it has

    asyncio.run(scenario())


def test_a_backlog_target_set_alone_stays_the_policy_once_a_throughput_is_measurable(
        ) -> None:
    """The default wait does not override a targetBacklogPerReplica set alone: 10 done in
    5 s by 2 pods would size 190 messages at 6 pods with a wait; 100 per pod keeps 2."""
    async def scenario() -> None:
        pool = Pool({"targetBacklogPerReplica": 100})
        await pool.probe(0, 100, 2)
        await pool.probe(5, 95, 2)
        scale = pool.runtime.fleets[KEY].scaling["default"]
        assert (scale.policy, scale.throughput_per_pod) == ("backlog", None)
        assert not pool.kube.scaled

    asyncio.run(scenario())


def test_the_arrival_rate_falls_to_0_before_the_pool_rests() -> None:
    """Status says "over the last minute": a pool that had arrivals is not left at rest
    (its status no longer written) before its arrival rate is 0 again."""
    async def scenario() -> None:
        pool = Pool()
        await pool.probe(0, 10, 1)            # backlog 20 on its one pod
        await pool.probe(5, 8, 1)             # 4 done in 5 s: 0.8 /s
        await pool.probe(5, 10, 1)            # +4 and 4 finished: 8 in the last minute
        await pool.probe(5, 0, 1)             # drained: the pool stays at its 1 pod
        assert pool.runtime.fleets[KEY].scaling["default"].arrival_rate == 0.133
        assert not pool.kube.scaled
        for _ in range(20):                   # two quiet minutes
            await pool.probe(6, 0, 1)
        assert pool.runtime.fleets[KEY].scaling["default"].arrival_rate == 0

    asyncio.run(scenario())


def test_a_new_pod_template_is_measured_afresh() -> None:
    """The throughput of the pods before (another concurrency, another image) says nothing
    of the new ones: once the Deployment's template changed the pool is sized from the
    backlog target again until the new pods have been measured."""
    async def scenario() -> None:
        pool = Pool()
        await pool.probe(0, 100, 2)
        await pool.probe(5, 95, 2)            # 1 /s per pod
        assert pool.throughput() == 1.0
        await pool.probe(5, 95, 2, pods="h2")
        scale = pool.runtime.fleets[KEY].scaling["default"]
        assert (scale.policy, scale.throughput_per_pod) == ("backlog", None)
        await pool.probe(5, 85, 2, pods="h2")   # 20 done in 5 s by 2 pods
        assert pool.throughput() == 2.0

    asyncio.run(scenario())


def test_a_wait_turned_off_shows_no_throughput() -> None:
    """Measured with a wait, then set to 0: status shows no throughput of before."""
    async def scenario() -> None:
        pool = Pool()
        await pool.probe(0, 100, 2)
        await pool.probe(5, 95, 2)
        assert pool.throughput() == 1.0
        state = pool.runtime.fleets[KEY]
        assert state.fleet is not None
        pools = tuple(dataclasses.replace(p, autoscaling=dataclasses.replace(
            p.autoscaling, target_wait_seconds=0.0)) for p in state.fleet.pools)
        state.fleet = dataclasses.replace(state.fleet, pools=pools, generation=2)
        pool.runtime.note_change()
        await pool.probe(5, 95, 6)
        scale = state.scaling["default"]
        assert (scale.policy, scale.throughput_per_pod) == ("backlog", None)

    asyncio.run(scenario())
