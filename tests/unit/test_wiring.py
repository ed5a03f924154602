"""The autoscaler and the runtime wired together over a fake Kube edge and a fake probe:
deleted objects leave nothing behind, decisions from an older spec are dropped, and the
liveness check and loop supervision work. (The real thing: tests/operator.)"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import socket
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf
import pytest
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from metamapper_operator import handlers, metrics
from metamapper_operator import kube as kube_module
from metamapper_operator.autoscale import loop
from metamapper_operator.autoscale.drainplan import DELETION_COST, DRAINED_COST, Load, WorkerPod
from metamapper_operator.autoscale.eviction import NOT_SAFE_TO_EVICT
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.autoscale.shrink import DRAINING, Shrinker
from metamapper_operator.brokers import QueueDepth
from metamapper_operator.builders import LABEL_COMPONENT, LABEL_INSTANCE, LABEL_NAME, LABEL_POOL
from metamapper_operator.config import Config
from metamapper_operator.handlers import supervise
from metamapper_operator.health import Health
from metamapper_operator.kube import Kube, KubeError
from metamapper_operator.model import parse
from metamapper_operator.references import BrokerAccess, SecretCache
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY

KEY = Key("wiring", "mm")
ACCESS = BrokerAccess(transport="redis", url="redis://r:6379/0")
POOL_LABELS = {LABEL_NAME: "metamapper", LABEL_INSTANCE: KEY.name, LABEL_COMPONENT: "worker",
               LABEL_POOL: "default"}


@dataclass
class FakeKube:
    scaled: list[tuple[str, int]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    statuses: int = 0
    pods: dict[str, dict[str, str]] = field(default_factory=dict)  # annotations by pod
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # set on a pod, by pod
    not_ready: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)   # not started (no room on a node)
    applied: list[str] = field(default_factory=list)
    live_uid: str | None = "u-1"  # the uid the apiserver has for the Metamapper
    status: dict[str, Any] = field(default_factory=dict)  # merged as the apiserver merges

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.scaled.append((name, replicas))

    async def event(self, involved: Mapping[str, Any], type: str, reason: str,
                    message: str) -> None:
        self.events.append(reason)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.statuses += 1
        for key, value in status.items():
            if value is None:
                self.status.pop(key, None)
            else:
                self.status[key] = copy.deepcopy(value)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return None

    async def metamapper_uid(self, namespace: str, name: str) -> str | None:
        return self.live_uid

    async def apply(self, obj: Mapping[str, Any]) -> None:
        self.applied.append(obj["metadata"]["name"])

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        """Every pod is a worker of KEY's pool "default", with the labels set on it."""
        found = {pod: {**POOL_LABELS, **self.labels.get(pod, {})} for pod in self.pods}
        return {pod: WorkerPod(pod, dict(annotations), found[pod],
                               phase="Pending" if pod in self.pending else "Running",
                               ready=pod not in self.not_ready | self.pending)
                for pod, annotations in self.pods.items()
                if all(found[pod].get(k) == v for k, v in labels.items())}

    def pods_ready(self, *pods: str) -> None:
        self.not_ready -= set(pods)

    async def annotate_pod(self, namespace: str, name: str,
                           annotations: Mapping[str, str | None],
                           labels: Mapping[str, str | None] | None = None) -> None:
        for values, changes in ((self.pods[name], annotations),
                                (self.labels.setdefault(name, {}), labels or {})):
            for key, value in changes.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value


@dataclass
class FakeProbe:
    """Reports ``waiting`` on every queue; runs ``during`` while "measuring"."""

    waiting: int
    during: Any = None
    source: str = "fake"
    round_trips: int = 0
    unconsumed: tuple[str, ...] | None = None
    failed: dict[str, str] = field(default_factory=dict)

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        if self.during is not None:
            self.during()
        return {queue: QueueDepth(waiting=self.waiting, in_flight=0) for queue in queues}

    async def close(self) -> None:
        pass


def runtime_of(kube: FakeKube, config: Config | None = None) -> Runtime:
    """The runtime the operator builds at start (``config``, or the defaults), over a fake
    Kube edge: ``FakeKube`` or one derived from it, its Secrets cached as the config says."""
    config = config or Config()
    # A fake answers the requests the wiring makes; it is no Kube, which only a protocol
    # of the edge's requests would let the type say.
    return Runtime(config=config, kube=kube,  # type: ignore[arg-type]
                   secrets=SecretCache(kube.read_secret, config.secret_ttl_seconds))


def setup(uid: str = "u-1", waiting: int = 9, replicas: int = 1
          ) -> tuple[Runtime, FakeKube, Autoscaler]:
    kube = FakeKube()
    runtime = runtime_of(kube, Config(poll_seconds=1))
    adopt(runtime, uid)
    autoscaler = Autoscaler(runtime, lambda key: {
        "mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=replicas)}
        if key in runtime.fleets else {})
    autoscaler.probes[ACCESS] = FakeProbe(waiting)
    return runtime, kube, autoscaler


def adopt(runtime: Runtime, uid: str, generation: int = 3) -> None:
    """What the reconciler does for an object: its state, from its spec."""
    raw = copy.deepcopy(BODY)
    raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid=uid, generation=generation)
    state, _ = runtime.state(KEY, uid)
    state.fleet, state.access, state.generation = parse(raw), ACCESS, generation
    runtime.note_change()


def series(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"namespace": KEY.namespace, "metamapper": KEY.name,
                                            "pool": "default"})


def test_a_deleted_object_leaves_no_state_no_series_and_no_zombie() -> None:
    async def scenario() -> None:
        runtime, kube, autoscaler = setup()
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 5)]
        assert series("metamapper_pool_backlog") == 18  # 9 on each of its two queues
        assert series("metamapper_pool_current_replicas") == 1  # the size, not the desired

        runtime.forget(KEY)
        assert series("metamapper_pool_backlog") is None
        assert series("metamapper_scale_events_total") is None
        await autoscaler.cycle()                    # nothing brings the state back
        await runtime.publish(KEY, {})
        assert runtime.fleets == {} and runtime.locks == {} and autoscaler.history == {}

    asyncio.run(scenario())


def test_a_recreated_object_starts_afresh() -> None:
    async def scenario() -> None:
        runtime, _, autoscaler = setup("u-1")
        await autoscaler.cycle()
        old = runtime.fleets[KEY]
        assert old.scaling and ("u-1", "default") in autoscaler.history
        adopt(runtime, "u-2")                       # same name, new object
        assert runtime.fleets[KEY] is not old and not runtime.fleets[KEY].scaling
        await autoscaler.cycle()
        assert set(autoscaler.history) == {("u-2", "default")}

    asyncio.run(scenario())


def test_a_decision_from_an_older_spec_is_dropped() -> None:
    async def scenario() -> None:
        runtime, kube, autoscaler = setup()

        def suspended_meanwhile() -> None:
            # The reconciler takes the new spec while the broker is being measured.
            adopt(runtime, "u-1", generation=4)
            state = runtime.fleets[KEY]
            assert state.fleet is not None
            state.fleet = parse({**copy.deepcopy(BODY), "spec": {
                **copy.deepcopy(BODY["spec"]), "suspend": True}})

        autoscaler.probes[ACCESS] = FakeProbe(9, during=suspended_meanwhile)
        await autoscaler.cycle()
        assert kube.scaled == []

    asyncio.run(scenario())


def test_liveness_reports_an_autoscaler_that_stopped_finishing_cycles() -> None:
    now = [0.0]
    runtime, _, autoscaler = setup()
    autoscaler.clock = lambda: now[0]
    assert autoscaler.stalled() is None               # not started yet
    autoscaler.finished = 0.0
    now[0] = autoscaler.cycle_limit + 2               # within a few intervals
    assert autoscaler.stalled() is None
    now[0] = autoscaler.cycle_limit + 4 * runtime.config.poll_seconds
    assert "no autoscaling cycle finished" in (autoscaler.stalled() or "")


def test_a_loop_that_dies_is_started_again() -> None:
    async def scenario() -> int:
        runs = 0

        async def dies() -> None:
            nonlocal runs
            runs += 1
            if runs < 3:
                raise RuntimeError("boom")
            await asyncio.sleep(3600)

        task = asyncio.create_task(supervise("test loop", dies))
        while runs < 3:
            await asyncio.sleep(0.1)
        task.cancel()
        return runs

    assert asyncio.run(scenario()) == 3


def test_metrics_forget_only_touches_its_object() -> None:
    metrics.pool_table.record(metrics.PoolSeries("other", "mm", "default"),
                              metrics.PoolFigures(1, 1, 0, 1, 1, {}))
    metrics.forget(*KEY)
    assert REGISTRY.get_sample_value("metamapper_pool_backlog", {
        "namespace": "other", "metamapper": "mm", "pool": "default"}) == 1


@dataclass
class FakeControl:
    """The workers' remote control: what each holds (missing: does not answer), and the
    consumers stopped and given back."""

    held: dict[str, Load] = field(default_factory=dict)   # by pod
    stopped: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    async def loads(self, hostnames: Collection[str]) -> dict[str, Load]:
        return {h: self.held[h.partition("@")[2]] for h in hostnames
                if h.partition("@")[2] in self.held}

    async def stop_consuming(self, hostnames: Collection[str], queues: Collection[str]
                             ) -> set[str]:
        self.stopped += [h.partition("@")[2] for h in hostnames]
        return set(hostnames)

    async def resume_consuming(self, hostnames: Collection[str], queues: Collection[str]
                               ) -> set[str]:
        self.resumed += [h.partition("@")[2] for h in hostnames]
        return set(hostnames)

    async def active(self, hostnames: Collection[str]) -> dict[str, int]:
        return {h: load.active for h, load in (await self.loads(hostnames)).items()}


async def cycle_and_answers(autoscaler: Autoscaler) -> None:
    """A cycle, then the round of questions to the workers it started (if any)."""
    await autoscaler.cycle()
    if autoscaler.asking is not None:
        await autoscaler.asking


def shrinking(pods: dict[str, WorkerPod], loads: dict[str, Load], replicas: int
              ) -> tuple[Runtime, FakeKube, Autoscaler, FakeControl, list[float]]:
    """A pool of ``replicas`` pods with nothing waiting, past its window at the second
    cycle, shrinking to its minimum in one decision (a step of 100 %); the clock is the
    returned list's one value."""
    runtime, kube, autoscaler = setup(waiting=0, replicas=replicas)
    state = runtime.fleets[KEY]
    assert state.fleet is not None
    state.fleet = dataclasses.replace(state.fleet, pools=tuple(dataclasses.replace(
        pool, autoscaling=dataclasses.replace(pool.autoscaling, scale_down_step_percent=100))
        for pool in state.fleet.pools))
    kube.pods = {name: dict(pod.annotations) for name, pod in pods.items()}
    kube.not_ready = {name for name, pod in pods.items() if not pod.ready}
    control = FakeControl(loads)
    clock = [0.0]
    autoscaler.clock = lambda: clock[0]
    autoscaler.shrinker = Shrinker(kube, autoscaler.clock,  # type: ignore[arg-type]
                                   control_for=lambda access, options: control)  # type: ignore[arg-type,return-value]
    return runtime, kube, autoscaler, control, clock


def window(runtime: Runtime) -> float:
    fleet = runtime.fleets[KEY].fleet
    assert fleet is not None
    return fleet.pools[0].autoscaling.scale_down_stabilization_seconds + 1


def test_a_shrinking_pool_drains_idle_workers_first_and_removes_exactly_them() -> None:
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-busy", "p-idle", "p-silent")}
        runtime, kube, autoscaler, control, clock = shrinking(
            pods, {"p-busy": Load(active=1), "p-idle": Load()}, replicas=3)
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()    # backlog 0: one pod (minReplicas)
        # The idle worker first, then the least busy; one that does not answer (maybe
        # hung: it could not confirm a drain) last.
        assert control.stopped == ["p-idle", "p-busy"]
        # The drained one gets the lowest cost; the Deployment shrinks only in the next
        # cycle, once the ReplicaSet controller's cache has had time to see it.
        assert kube.scaled == []
        assert kube.pods["p-idle"][DELETION_COST] == str(DRAINED_COST)
        assert DELETION_COST not in kube.pods["p-busy"]
        assert DRAINING in kube.pods["p-busy"]
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 2)]          # only the drained one goes
        assert runtime.fleets[KEY].scaling["default"].draining == ("p-busy",)
        del kube.pods["p-idle"]                          # the ReplicaSet removed it
        control.held["p-busy"] = Load()                  # its task is done
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 2)]
        assert kube.pods["p-busy"][DELETION_COST] == str(DRAINED_COST)
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 2), ("mm-default", 1)]
        assert set(kube.pods) == {"p-silent", "p-busy"}
    asyncio.run(scenario())


def test_a_drain_that_times_out_gives_the_worker_its_queues_back_and_says_so() -> None:
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-a", "p-b")}
        runtime, kube, autoscaler, control, clock = shrinking(
            pods, {"p-a": Load(active=1), "p-b": Load(reserved=1)}, replicas=2)
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert control.stopped == ["p-a"] and kube.scaled == []
        grace = runtime.fleets[KEY].fleet.pools[0].termination_grace_period_seconds  # type: ignore[union-attr]
        clock[0] += grace - 1
        await autoscaler.cycle()
        assert control.resumed == [] and kube.scaled == []    # still within its time
        clock[0] += 1
        await autoscaler.cycle()
        assert control.resumed == ["p-a"] and kube.scaled == []
        assert "DrainTimedOut" in kube.events
        assert DRAINING not in kube.pods["p-a"]
        scale = runtime.fleets[KEY].scaling["default"]
        assert "p-a timed out" in (scale.drain_timed_out or "")
    asyncio.run(scenario())


def test_drained_pods_wait_while_a_staying_pod_would_be_removed_before_them() -> None:
    """A staying pod not ready ranks below the drained one whatever its cost: lowering
    the replicas then would remove it, so the scale-down waits."""
    async def scenario() -> None:
        pods = {"p-idle": WorkerPod("p-idle"), "p-new": WorkerPod("p-new", ready=False)}
        runtime, kube, autoscaler, control, clock = shrinking(
            pods, {"p-idle": Load(), "p-new": Load(active=1)}, replicas=2)
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert control.stopped == ["p-idle"] and kube.scaled == []
        assert DELETION_COST not in kube.pods["p-idle"]
        kube.pods_ready("p-new")
        await autoscaler.cycle()                         # the cost, then the scale
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 1)]
    asyncio.run(scenario())


def test_a_pod_that_cannot_start_is_retired_before_running_idle_workers() -> None:
    """All idle: retiring the running workers would keep the Pending pod, which the
    ReplicaSet controller removes first: the scale-down would wait (with no worker
    consuming) until the pod starts."""
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-a", "p-b", "p-c", "p-z")}
        runtime, kube, autoscaler, control, clock = shrinking(
            pods, {name: Load() for name in ("p-a", "p-b", "p-c")}, replicas=4)
        kube.pending = {"p-z"}
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert control.stopped == ["p-a", "p-b"]    # nobody asks a worker not started
        assert kube.pods["p-z"][DELETION_COST] == str(DRAINED_COST)
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 1)]
        assert DRAINING not in kube.pods["p-c"]
    asyncio.run(scenario())


def test_a_burst_during_a_drain_takes_the_draining_worker_back() -> None:
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-a", "p-b")}
        runtime, kube, autoscaler, control, clock = shrinking(
            pods, {"p-a": Load(active=1), "p-b": Load(active=1)}, replicas=2)
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert control.stopped == ["p-a"]
        autoscaler.probes[ACCESS] = FakeProbe(4)            # wants more than 2 pods
        await autoscaler.cycle()
        assert control.resumed == ["p-a"] and kube.scaled and kube.scaled[-1][1] > 2
        assert runtime.fleets[KEY].scaling["default"].draining == ()
    asyncio.run(scenario())


def test_a_drained_worker_wanted_back_loses_its_deletion_cost() -> None:
    """Otherwise the ReplicaSet controller would remove it first at the next scale-down,
    whichever pods that one drained."""
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-a", "p-b")}
        runtime, kube, autoscaler, control, clock = shrinking(
            pods, {"p-a": Load(), "p-b": Load(active=1)}, replicas=2)
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert kube.pods["p-a"][DELETION_COST] == str(DRAINED_COST) and kube.scaled == []
        autoscaler.probes[ACCESS] = FakeProbe(4)            # wants more than 2 pods
        await autoscaler.cycle()
        assert control.resumed == ["p-a"] and kube.pods["p-a"] == {}
        assert all(replicas > 2 for _, replicas in kube.scaled)
    asyncio.run(scenario())


def test_sqs_pools_shrink_without_a_drain() -> None:
    async def scenario() -> None:
        sqs = BrokerAccess(transport="sqs", url="sqs://")
        runtime, kube, autoscaler, control, clock = shrinking(
            {"p-a": WorkerPod("p-a"), "p-b": WorkerPod("p-b")}, {}, replicas=2)
        runtime.fleets[KEY].access = sqs
        autoscaler.probes = {sqs: FakeProbe(0)}
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert kube.scaled == [("mm-default", 1)]
        assert control.stopped == [] and all(not a for a in kube.pods.values())
    asyncio.run(scenario())


def test_an_operator_that_restarts_carries_on_the_drains_it_finds() -> None:
    async def scenario() -> None:
        pods = {"p-a": WorkerPod("p-a", {DRAINING: "true"}), "p-b": WorkerPod("p-b")}
        _runtime, kube, autoscaler, control, _clock = shrinking(
            pods, {"p-a": Load(), "p-b": Load(active=1)}, replicas=2)
        autoscaler.probes[ACCESS] = FakeProbe(4)           # wants 2: p-a is wanted back
        await autoscaler.cycle()
        assert control.resumed == ["p-a"] and DRAINING not in kube.pods["p-a"]
    asyncio.run(scenario())


def test_workers_of_a_pool_no_longer_scaled_consume_again() -> None:
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-a", "p-b")}
        runtime, _kube, autoscaler, control, clock = shrinking(
            pods, {"p-a": Load(active=1), "p-b": Load(active=1)}, replicas=2)
        await autoscaler.cycle()
        clock[0] = window(runtime)
        await autoscaler.cycle()
        assert control.stopped == ["p-a"]
        runtime.fleets[KEY].fleet = replace_autoscaling(runtime, enabled=False)
        runtime.note_change()
        await autoscaler.cycle()
        assert control.resumed == ["p-a"]
    asyncio.run(scenario())


def replace_autoscaling(runtime: Runtime, **changes: Any) -> Any:
    fleet = runtime.fleets[KEY].fleet
    assert fleet is not None
    pool = fleet.pools[0]
    pool = dataclasses.replace(pool, autoscaling=dataclasses.replace(pool.autoscaling,
                                                                      **changes))
    return dataclasses.replace(fleet, pools=(pool,))


def test_no_children_are_created_for_an_object_that_is_gone() -> None:
    """An object deleted while the watch was down is still in the index; its resync must
    not create children for a dead owner (the garbage collector would remove them again,
    on every resync)."""
    async def scenario(live_uid: str | None) -> tuple[list[str], bool]:
        kube = FakeKube(live_uid=live_uid)
        runtime = runtime_of(kube)
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        await handlers.reconcile(kopf.Body(raw), runtime, {}, {})
        return kube.applied, KEY in runtime.fleets

    assert asyncio.run(scenario(None)) == ([], False)           # deleted
    assert asyncio.run(scenario("u-2")) == ([], False)          # deleted and re-created
    applied, known = asyncio.run(scenario("u-1"))               # a new object
    assert known and set(applied) == {"mm-celery", "mm-default", "mm-scheduler"}


def test_a_stalled_request_cannot_hold_a_cycle_or_a_lock() -> None:
    """A scale request that never returns: the pool's step ends at its share of the
    interval (the object's lock released) as the pool's fault, and cycles go on."""
    class StalledKube(FakeKube):
        async def scale(self, namespace: str, name: str, replicas: int) -> None:
            await asyncio.Event().wait()

    async def scenario() -> None:
        kube = StalledKube()
        runtime = runtime_of(kube, Config(poll_seconds=0.1, cycle_limit_seconds=0.3))
        adopt(runtime, "u-1")
        autoscaler = Autoscaler(runtime, lambda key: {
            "mm-default": DeploymentState(name="mm-default", spec_hash="h", replicas=1)})
        autoscaler.probes[ACCESS] = FakeProbe(9)
        task = asyncio.create_task(autoscaler.run())
        await asyncio.sleep(1.2)
        # The reconciler, say, gets the lock within one cycle limit.
        await asyncio.wait_for(runtime.locks[KEY].acquire(), 0.6)
        assert autoscaler.stalled() is None
        assert "took longer than" in str(runtime.fleets[KEY].faults)
        task.cancel()

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def silent_apiserver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Kube]:
    """A Kube edge, its requests' timeout at 0.5 s, before an apiserver that accepts the
    connection and never answers."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.Event().wait()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kube = Kube(client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}")))
    monkeypatch.setattr(kube_module, "REQUEST_TIMEOUT", 0.5)
    try:
        yield kube
    finally:
        await kube.close()
        server.close()


def test_every_api_request_has_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """An apiserver that accepts the connection and never answers."""
    async def scenario() -> None:
        async with silent_apiserver(monkeypatch) as kube:
            for call in (kube.scale("ns", "d", 2), kube.read_secret("ns", "s"),
                         kube.patch_status("ns", "mm", {"x": 1}),
                         kube.list_pods("ns", {"a": "b"})):
                with pytest.raises(KubeError) as failed:
                    await asyncio.wait_for(call, 5)
                assert failed.value.retryable

    asyncio.run(scenario())


def test_the_secret_cache_keeps_only_what_is_read_within_its_time_to_live() -> None:
    async def scenario() -> None:
        now = [0.0]

        async def read(namespace: str, name: str) -> dict[str, str] | None:
            return {"url": f"redis://{name}"}

        cache = SecretCache(read, ttl=60, clock=lambda: now[0])
        await cache.read("ns", "old")
        await cache.read("ns", "kept")
        now[0] = 50
        await cache.read("ns", "kept")               # still cached
        now[0] = 70                                   # "old" unused for 70 s: dropped
        await cache.read("ns", "kept")
        assert len(cache) == 1

    asyncio.run(scenario())


def loopback_port() -> int:
    """A free TCP port on 127.0.0.1 (the development network's address is not needed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthz_answers_for_a_standby_and_fails_on_a_stall() -> None:
    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        problems: list[str | None] = [None]
        health = Health(checks=[lambda: problems[0]])
        port = loopback_port()
        await health.start(port, "127.0.0.1")
        answers = []
        try:
            async with aiohttp.ClientSession() as session:
                for problem in (None, "no autoscaling cycle finished for 40 s"):
                    problems[0] = problem
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as rsp:
                        answers.append((rsp.status, await rsp.json()))
        finally:
            await health.stop()
        return answers

    (ok, body), (failing, reported) = asyncio.run(scenario())
    assert (ok, body["role"]) == (200, "standby")
    assert failing == 500 and reported["problems"] == ["no autoscaling cycle finished for 40 s"]


def test_every_kopf_handler_runs_on_the_event_loop() -> None:
    """kopf runs a plain function in a thread of its executor; the handlers share the
    runtime's state with the loops, so each must be a coroutine function (on the loop).
    (Index functions, ``@kopf.index``, only return values: they may stay plain.)"""
    import ast
    import inspect

    from metamapper_operator import handlers

    tree = ast.parse(inspect.getsource(handlers))
    registered = [node for node in tree.body
                  if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                  and any(ast.unparse(d).startswith("kopf.on.") for d in node.decorator_list)]
    assert any(node.name == "forget_deleted" for node in registered)
    sync = [node.name for node in registered if isinstance(node, ast.FunctionDef)]
    assert sync == [], f"kopf would run these in a thread: {sync}"


def test_busy_pods_are_marked_not_safe_to_evict_and_idle_ones_unmarked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        _, kube, autoscaler = setup(waiting=0, replicas=2)
        probe = autoscaler.probes[ACCESS]
        assert isinstance(probe, FakeProbe)
        kube.pods = {"p-a": {}, "p-b": {}}
        asked: list[int] = []

        async def answers(active: dict[str, int], *_: object) -> dict[str, int]:
            asked.append(1)
            return {f"default@{pod}": n for pod, n in active.items()}

        # After a start nothing is known of the marks: the workers are asked once.
        monkeypatch.setattr(loop, "active_tasks", functools.partial(answers, {"p-a": 0,
                                                                              "p-b": 0}))
        await cycle_and_answers(autoscaler)
        assert len(asked) == 1 and kube.pods == {"p-a": {}, "p-b": {}}
        # Idle queues and no marks: nobody is asked.
        await cycle_and_answers(autoscaler)
        assert len(asked) == 1
        # Work arrives: the busy pod is marked.
        probe.waiting = 1
        monkeypatch.setattr(loop, "active_tasks", functools.partial(answers, {"p-a": 1,
                                                                              "p-b": 0}))
        await cycle_and_answers(autoscaler)
        assert kube.pods["p-a"] == dict(NOT_SAFE_TO_EVICT) and kube.pods["p-b"] == {}
        # The queue drains and the worker finishes: the marks go, then the asking stops.
        probe.waiting = 0
        monkeypatch.setattr(loop, "active_tasks", functools.partial(answers, {"p-a": 0,
                                                                              "p-b": 0}))
        await cycle_and_answers(autoscaler)
        assert kube.pods == {"p-a": {}, "p-b": {}}
        count = len(asked)
        await cycle_and_answers(autoscaler)
        assert len(asked) == count

    asyncio.run(scenario())


def test_a_reconcile_before_the_indexes_catch_up_applies_nothing_again() -> None:
    """The watch indexes lag behind the operator's own writes (seconds on a loaded
    apiserver): a reconcile right after another must not apply and announce every child
    a second time."""
    async def scenario() -> list[str]:
        kube = FakeKube()
        runtime = runtime_of(kube)
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY[0], name=KEY[1], uid="u-1")
        await handlers.reconcile(kopf.Body(raw), runtime, {}, {})
        await handlers.reconcile(kopf.Body(raw), runtime, {}, {})   # indexes still empty
        return kube.applied

    # The pool's Deployment and its PodDisruptionBudget share the name mm-default.
    assert sorted(asyncio.run(scenario())) == [
        "mm-celery", "mm-default", "mm-default", "mm-scheduler"]


def test_a_pod_is_read_as_the_replicaset_controller_ranks_it() -> None:
    def pod(node: str | None, phase: str | None, ready: str | None) -> client.V1Pod:
        conditions = [client.V1PodCondition(type="Ready", status=ready)] if ready else None
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name="p", annotations={DRAINING: "true"},
                                         labels={"pod-template-hash": "h"}),
            spec=client.V1PodSpec(node_name=node, containers=[]),
            status=client.V1PodStatus(phase=phase, conditions=conditions))

    running = kube_module._worker_pod(pod("n1", "Running", "True"))
    assert running == WorkerPod("p", {DRAINING: "true"}, {"pod-template-hash": "h"},
                                assigned=True, phase="Running", ready=True)
    assert kube_module._worker_pod(pod("n1", "Running", "False")).ready is False
    fresh = kube_module._worker_pod(pod(None, None, None))
    assert (fresh.assigned, fresh.phase, fresh.ready) == (False, "Pending", False)


def test_the_marks_ask_the_workers_through_the_same_remote_control_as_the_drains() -> None:
    """The marks reached the workers through a control of their own (a real broker
    connection the drains' injected control never saw)."""
    async def scenario() -> dict[str, dict[str, str]]:
        pods = {"p-a": WorkerPod("p-a"), "p-b": WorkerPod("p-b")}
        _, kube, autoscaler, _, _ = shrinking(pods, {"p-a": Load(active=1), "p-b": Load()}, 2)
        probe = autoscaler.probes[ACCESS]
        assert isinstance(probe, FakeProbe)
        probe.waiting = 4   # 2 per pod: the pool keeps its size, the workers are asked
        await cycle_and_answers(autoscaler)
        return kube.pods

    marked = asyncio.run(scenario())
    assert marked["p-a"] == dict(NOT_SAFE_TO_EVICT) and marked["p-b"] == {}


def test_a_reconcile_that_relied_on_its_own_writes_is_not_skipped_by_the_resync() -> None:
    """Children known only from the operator's recent writes (the indexes did not show
    them) must be checked again: one deleted in that time was otherwise never re-created,
    as every later resync found the same indexes and skipped the object."""
    async def scenario() -> tuple[bool, bool]:
        kube = FakeKube()
        runtime = runtime_of(kube)
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY[0], name=KEY[1], uid="u-1")
        body = kopf.Body(raw)
        await handlers.reconcile(body, runtime, {}, {})
        await handlers.reconcile(body, runtime, {}, {})   # indexes still empty
        return (handlers.unchanged(runtime, Key(*KEY), handlers.inputs_of(body, {}, {})),
                runtime.fleets[Key(*KEY)].reconciled is None)

    assert asyncio.run(scenario()) == (False, True)
