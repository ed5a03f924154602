"""A new operator process (a restart, a failover to a new leader) meeting objects whose
children and status already match: it writes nothing and reads nothing per object, its
reconcile and its autoscaler's first cycle alike. Its autoscaler knows every object from
kopf's index before the object's reconcile: a burst is acted on at the first cycle, and
the status is still written only by the reconcile that saw it. Small fakes of the Kube
edge and the broker (the real thing: bench/churn.py)."""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest

from metamapper_operator import handlers, listed
from metamapper_operator.autoscale.drainplan import Load
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.builders import SPEC_HASH
from metamapper_operator.children import Children
from metamapper_operator.config import Config
from metamapper_operator.kube import KubeError
from metamapper_operator.model import parse
from metamapper_operator.references import resolve
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY
from tests.unit.test_waves_loop import Fleet, at, wall_clock_autoscaler
from tests.unit.test_wiring import KEY as KEY_WARM
from tests.unit.test_wiring import FakeControl, FakeKube, FakeProbe, runtime_of

KEY = Key("restart", "mm")


@dataclass
class ClusterKube(FakeKube):
    """Keeps what the operator wrote: the children applied, the status as merged."""

    children: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    uid_reads: int = 0
    secret_reads: int = 0

    async def apply(self, obj: Mapping[str, Any]) -> None:
        await super().apply(obj)
        self.children[obj["kind"], obj["metadata"]["name"]] = obj

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        await super().scale(namespace, name, replicas)
        self.children["Deployment", name]["spec"]["replicas"] = replicas  # type: ignore[index]

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.secret_reads += 1
        return await super().read_secret(namespace, name)

    async def metamapper_uid(self, namespace: str, name: str) -> str | None:
        self.uid_reads += 1
        return await super().metamapper_uid(namespace, name)

    def watched(self) -> tuple[dict[str, DeploymentState], dict[tuple[str, str], str]]:
        """The children as the watches show them (every pod up and ready)."""
        deployments, others = {}, {}
        for (kind, name), obj in self.children.items():
            spec_hash = obj["metadata"]["annotations"][SPEC_HASH]
            if kind == "Deployment":
                replicas = int(obj["spec"]["replicas"])
                deployments[name] = DeploymentState(
                    name=name, spec_hash=spec_hash, replicas=replicas, ready=replicas,
                    updated=replicas, generation=1, observed_generation=1)
            else:
                others[kind, name] = spec_hash
        return deployments, others


def raw_body() -> dict[str, Any]:
    raw = copy.deepcopy(BODY)
    raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1", generation=3)
    return raw


def operator_process(kube: ClusterKube) -> tuple[Runtime, Autoscaler]:
    """A fresh operator process: nothing in memory."""
    runtime = runtime_of(kube, Config(poll_seconds=1))
    autoscaler = Autoscaler(runtime, lambda key: kube.watched()[0])
    return runtime, autoscaler


async def reconcile(runtime: Runtime, kube: ClusterKube, raw: dict[str, Any]) -> None:
    deployments, others = kube.watched()
    await handlers.reconcile(kopf.Body(raw), runtime, deployments, others)


async def measure(runtime: Runtime, autoscaler: Autoscaler) -> None:
    state = runtime.fleets[KEY]
    assert state.access is not None
    autoscaler.probes.setdefault(state.access, FakeProbe(0, unconsumed=()))
    await autoscaler.cycle()


def test_a_new_process_writes_nothing_for_objects_that_match() -> None:
    async def scenario() -> None:
        kube = ClusterKube()
        first, autoscaler = operator_process(kube)
        await reconcile(first, kube, raw_body())       # creates the children
        await reconcile(first, kube, raw_body())       # the watches show them
        await measure(first, autoscaler)
        await measure(first, autoscaler)
        assert kube.status["pools"][0]["backlog"] == 0

        kube = ClusterKube(children=kube.children, status=copy.deepcopy(kube.status))
        second, autoscaler = operator_process(kube)
        raw = raw_body()
        raw["status"] = copy.deepcopy(kube.status)
        await reconcile(second, kube, raw)
        assert (kube.applied, kube.statuses, kube.events, kube.uid_reads) == ([], 0, [], 0)
        await measure(second, autoscaler)
        await measure(second, autoscaler)
        assert (kube.applied, kube.statuses, kube.events) == ([], 0, [])

    asyncio.run(scenario())


async def index_of(raw: dict[str, Any]) -> dict[Key, list[str]]:
    """kopf's index of the Metamappers holding ``raw``, as ``handlers.metamappers`` keeps it."""
    entry = await handlers.metamappers(namespace=KEY.namespace, name=KEY.name,
                                       body=kopf.Body(raw))
    return {key: [value] for key, value in entry.items()}


def settled_cluster(waiting: int = 0, raw: dict[str, Any] | None = None) -> ClusterKube:
    """What a first process left of ``raw`` (``raw_body()``) with ``waiting`` messages on
    each queue: the children at rest (scaled for them), the status it wrote."""
    raw = raw or raw_body()

    async def first_process() -> ClusterKube:
        kube = ClusterKube()
        first, autoscaler = operator_process(kube)
        await reconcile(first, kube, copy.deepcopy(raw))
        await reconcile(first, kube, copy.deepcopy(raw))
        state = first.fleets[KEY]
        assert state.access is not None
        autoscaler.probes[state.access] = FakeProbe(waiting, unconsumed=())
        for _ in range(3):
            await measure(first, autoscaler)
        return ClusterKube(children=kube.children, status=copy.deepcopy(kube.status))

    return asyncio.run(first_process())


def listed_process(kube: ClusterKube, raw: dict[str, Any], waiting: int
                   ) -> tuple[Runtime, Autoscaler]:
    """A new process whose autoscaler knows the object from kopf's index alone: no
    reconcile has run yet (thousands wait for their turn after a restart)."""
    runtime = runtime_of(kube, Config(poll_seconds=1))
    autoscaler = Autoscaler(runtime, lambda key: kube.watched()[0],
                            bodies=asyncio.run(index_of(raw)))
    access = asyncio.run(resolve(parse(raw), kube.read_secret))
    autoscaler.probes[access] = FakeProbe(waiting, unconsumed=())
    return runtime, autoscaler


def test_a_fleet_known_only_from_the_index_is_scaled_on_the_first_cycle() -> None:
    kube = settled_cluster()
    raw = raw_body()
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=9)

    async def scenario() -> None:
        await autoscaler.cycle()
        # The burst is acted on before any reconcile, without a read of the object...
        assert kube.scaled == [("mm-default", 5)] and kube.uid_reads == 0
        assert kube.events == ["ScaledUp"]
        # ...and its status is left to the reconcile, which brings the status the watch
        # saw: the status of a process that never saw it would be rewritten whole.
        assert kube.statuses == 0
        await reconcile(runtime, kube, raw)
        assert kube.statuses == 1 and kube.applied == []
        pool = kube.status["pools"][0]
        assert pool["desiredReplicas"] == 5 and "lastScaleTime" in pool
        assert pool["lastScaleReason"].startswith("backlog")

    asyncio.run(scenario())


@pytest.mark.parametrize("waiting", [0, 9])
def test_a_listed_fleet_at_rest_costs_no_write_before_or_after_its_reconcile(
        waiting: int) -> None:
    """Idle, or busy at the size the last process gave it (its status says when)."""
    kube = settled_cluster(waiting)
    assert ("lastScaleTime" in kube.status["pools"][0]) == bool(waiting)
    raw = raw_body()
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=waiting)

    async def scenario() -> None:
        await autoscaler.cycle()
        await autoscaler.cycle()
        assert runtime.fleets[KEY].fleet is not None       # known, from the index
        await reconcile(runtime, kube, raw)
        await autoscaler.cycle()
        await autoscaler.cycle()
        assert (kube.applied, kube.scaled, kube.statuses, kube.events, kube.uid_reads) == (
            [], [], 0, [], 0)

    asyncio.run(scenario())


def test_a_fleet_whose_broker_is_in_a_secret_not_read_yet_waits_for_its_reconcile() -> None:
    """Learning from the index reads nothing: a Secret not in the cache is its
    reconcile's to read."""
    kube = settled_cluster()
    raw = raw_body()
    raw["spec"]["broker"] = {"urlSecretRef": {"name": "broker", "key": "url"}}
    runtime = runtime_of(kube, Config(poll_seconds=1))
    autoscaler = Autoscaler(runtime, lambda key: kube.watched()[0],
                            bodies=asyncio.run(index_of(raw)))
    asyncio.run(autoscaler.cycle())
    assert runtime.fleets == {} and kube.secret_reads == 0


def test_thousands_listed_are_all_known_after_one_pass_that_lets_the_loop_run() -> None:
    """A new process reads its objects from the index a hundred at a time, the event loop
    running in between; none is left out, none read twice."""
    runtime = runtime_of(ClusterKube(), Config(poll_seconds=1))
    bodies: dict[Key, list[str]] = {}
    for n in range(3 * listed.READ_AT_ONCE + 1):
        raw = raw_body()
        raw["metadata"].update(name=f"mm-{n}", uid=f"u-{n}")
        entry = asyncio.run(handlers.metamappers(namespace=KEY.namespace, name=f"mm-{n}",
                                                 body=kopf.Body(raw)))
        bodies.update({key: [value] for key, value in entry.items()})
    turns = 0
    learner = listed.Learner()

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def scenario() -> None:
        counting = asyncio.create_task(count_turns())
        await asyncio.sleep(0)
        await learner.learn(runtime, bodies)
        counting.cancel()

    asyncio.run(scenario())
    assert set(runtime.fleets) == set(bodies) and turns > 3
    assert all(state.listed and state.fleet is not None and state.fleet.uid == state.uid
               for state in runtime.fleets.values())
    revision = runtime.revision
    asyncio.run(learner.learn(runtime, bodies))
    assert runtime.revision == revision    # nothing new: the grouping stands


def test_a_listed_pool_rests_until_its_reconcile_then_shows_what_it_measures() -> None:
    """A pool at its size costs no decision while its object waits for its reconcile
    (thousands do after a restart); once the status is known, the pool is decided again,
    and the status shows this process's measurement, not the last one's. (No scheduler:
    nothing else the pool's decision reads changes with the reconcile.)"""
    raw = raw_body()
    raw["spec"]["scheduler"] = {"enabled": False}
    kube = settled_cluster(waiting=9, raw=raw)
    assert kube.status["pools"][0]["backlog"] == 18
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=8)   # still 5 pods' worth

    async def scenario() -> None:
        await autoscaler.cycle()
        assert set(autoscaler.resting) == {("u-1", "default")} and kube.statuses == 0
        await reconcile(runtime, kube, raw)
        assert kube.statuses == 0          # the status as it was: nothing new carried
        await autoscaler.cycle()
        assert kube.scaled == [] and kube.statuses == 1
        assert kube.status["pools"][0]["backlog"] == 16

    asyncio.run(scenario())


def test_a_spec_the_reconcile_refuses_is_neither_learned_nor_scaled() -> None:
    """Learning reads the spec as the reconcile does: a crontab Celery refuses makes it
    InvalidSpec there, so nothing of it is scaled from the index."""
    kube = settled_cluster()
    raw = raw_body()
    raw["metadata"]["generation"] = 4
    raw["spec"]["celery"]["settings"]["beat_schedule"] = {
        "nightly": {"task": "app.t", "schedule": "0 0 * * 7"}}   # Celery refuses dow 7
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=9)
    asyncio.run(autoscaler.cycle())
    assert KEY not in runtime.fleets and kube.scaled == []


def test_a_failed_first_reconcile_after_a_restart_claims_no_generation() -> None:
    """Spec edited while no operator ran (generation 4), learned from the index, then its
    reconcile fails: the status must not say generation 4 is in force."""
    kube = settled_cluster()
    assert kube.status["observedGeneration"] == 3
    raw = raw_body()
    raw["metadata"]["generation"] = 4
    raw["spec"]["image"] = "metamapper-worker:9.9.9"
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=0)

    async def refused(obj: Mapping[str, Any]) -> None:
        raise KubeError("applying", RuntimeError("422 the apiserver refused it"))
    kube.apply = refused  # type: ignore[method-assign]

    async def scenario() -> None:
        await autoscaler.cycle()
        assert runtime.fleets[KEY].listed and runtime.fleets[KEY].generation == 4
        with pytest.raises((kopf.PermanentError, kopf.TemporaryError)):
            await reconcile(runtime, kube, raw)

    asyncio.run(scenario())
    assert kube.status["observedGeneration"] != 4
    assert {(c["type"], c["reason"]) for c in kube.status["conditions"]} == {
        ("Ready", "ApplyFailed"), ("Progressing", "ApplyFailed"), ("Degraded", "ApplyFailed")}


def test_a_listed_pool_the_last_leader_warmed_is_not_drained_during_its_wave() -> None:
    """Known from the index alone, the warm-up is not known yet (its reconcile brings it):
    the pool may grow but never shrink below the size it has."""
    async def scenario() -> None:
        fleet = Fleet(autoscaling={"warmUp": {"replicas": 3}})
        await fleet.cycle("2026-12-07T10:44:40")      # the last leader warms it
        assert fleet.replicas == 3
        state = fleet.runtime.fleets[KEY_WARM]        # a new process knows it listed
        state.listed = True
        state.scaling.clear()
        fleet.runtime.note_change()
        fleet.kube.pods = {"p-a": {}, "p-b": {}, "p-c": {}}
        fleet.control = FakeControl({"p-a": Load(), "p-b": Load(), "p-c": Load()})
        fleet.autoscaler = wall_clock_autoscaler(fleet.runtime, fleet.kube, fleet.deployments,
                                                 lambda: fleet.wall, lambda: fleet.control)
        fleet.wall = at("2026-12-07T10:44:45")
        while fleet.wall < at("2026-12-07T10:45:55"):   # the wave fires at 10:45, held 60 s
            await fleet.autoscaler.cycle()
            fleet.wall += datetime.timedelta(seconds=5)
        assert not any("metamapper.io/draining" in pod for pod in fleet.kube.pods.values())
        assert fleet.replicas == 3

    asyncio.run(scenario())


def listed_entries(raw: dict[str, Any]) -> dict[Key, list[str]]:
    return asyncio.run(index_of(raw))


def test_an_object_that_cannot_be_learned_is_logged_once_and_read_again_when_it_changes(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing foreseen a reconcile would refuse: a surprise (version skew, say) is told
    once, not at every cycle until the reconcile, and the object is not read again until
    its index entry changes."""
    reads: list[str] = []

    async def surprised(body: Mapping[str, Any], read: Any, home: str | None) -> Any:
        reads.append(body["spec"]["image"])
        raise RuntimeError("a field nobody foresaw")
    monkeypatch.setattr(listed, "read_spec", surprised)
    runtime, _ = operator_process(ClusterKube())
    raw = raw_body()
    bodies = listed_entries(raw)
    raw["spec"]["image"] = "metamapper-worker:9.9.9"
    edited = listed_entries(raw)
    learner = listed.Learner()

    async def scenario() -> None:
        for _ in range(3):
            await learner.learn(runtime, bodies)
        assert len(reads) == 1
        bodies.update(edited)
        await learner.learn(runtime, bodies)
        await learner.learn(runtime, bodies)

    with caplog.at_level(logging.ERROR, logger=listed.__name__):
        asyncio.run(scenario())
    assert reads == [BODY["spec"]["image"], "metamapper-worker:9.9.9"]
    assert len(caplog.records) == 2 and KEY not in runtime.fleets


@dataclass
class SecretKube(ClusterKube):
    """Holds the broker's Secret."""

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        self.secret_reads += 1
        return {"url": "redis://redis:6379/0"} if name == "broker" else None


def test_a_fleet_waiting_for_a_secret_is_read_again_only_once_that_secret_is_read(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Not parsed again at every cycle while its Secret is not cached (thousands wait so
    after a restart); learned at the first cycle after another object's reconcile read
    that Secret."""
    raw = raw_body()
    raw["spec"]["broker"] = {"urlSecretRef": {"name": "broker", "key": "url"},
                             "redis": {"globalKeyPrefix": "mm:"}}
    read = listed.read_spec
    reads = 0

    async def counted(body: Mapping[str, Any], secrets: Any, home: str | None) -> Any:
        nonlocal reads
        reads += 1
        return await read(body, secrets, home)
    monkeypatch.setattr(listed, "read_spec", counted)
    kube = SecretKube()
    runtime, _ = operator_process(kube)
    bodies = listed_entries(raw)
    learner = listed.Learner()

    async def scenario() -> None:
        for _ in range(3):
            await learner.learn(runtime, bodies)
        assert reads == 1 and KEY not in runtime.fleets and kube.secret_reads == 0
        await runtime.secrets.read(KEY.namespace, "broker")   # another object's reconcile
        await learner.learn(runtime, bodies)
        assert reads == 2 and runtime.fleets[KEY].listed

    asyncio.run(scenario())


@pytest.mark.parametrize(("reason", "kept"), [(kopf.Reason.RESUME, True),
                                              (kopf.Reason.UPDATE, False)])
def test_a_resume_keeps_the_secrets_read_in_its_namespace(reason: kopf.Reason,
                                                          kept: bool) -> None:
    """A new process's cache holds only its own reads: a resume dropping them would undo
    what another object's reconcile read for the objects still waiting (listed.Learner).
    A spec change reads its Secrets afresh."""
    kube = SecretKube()
    runtime, _ = operator_process(kube)

    async def scenario() -> None:
        await runtime.secrets.read(KEY.namespace, "broker")
        await handlers.apply_spec(body=kopf.Body(raw_body()), reason=reason,
                                  memo=kopf.Memo(runtime=runtime, children=Children(())))

    asyncio.run(scenario())
    assert (len(runtime.secrets) == 1) is kept


def test_the_resync_leaves_objects_waiting_for_their_first_reconcile_to_it() -> None:
    """After a restart, the resync may come round before thousands of resume handlers
    have run: an object with no state, or known from the index alone, is its resume
    handler's (which brings the status the watch saw), not the resync's, which would
    compare with no status and write it whole."""
    kube = settled_cluster()
    raw = raw_body()
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=0)
    other = raw_body()
    other["metadata"].update(name="other", uid="u-2")
    bodies = {**listed_entries(raw), **{key: [value] for key, value in asyncio.run(
        handlers.metamappers(namespace=KEY.namespace, name="other",
                             body=kopf.Body(other))).items()}}

    async def scenario() -> None:
        await autoscaler.cycle()          # learns KEY (its index holds KEY alone)
        assert runtime.fleets[KEY].listed
        await handlers.resync_once(runtime, bodies, Children(()))

    asyncio.run(scenario())
    assert (kube.statuses, kube.applied, kube.events) == (0, [], [])
    assert runtime.fleets[KEY].listed and Key(KEY.namespace, "other") not in runtime.fleets


def test_a_broker_down_during_a_restart_is_told_once_after_the_reconcile() -> None:
    """What the status last said of the broker is not known before the reconcile: the
    autoscaler records no broker error for an object known from the index alone, so the
    BrokerUnreachable event comes once, with the status that shows it."""
    kube = settled_cluster()
    raw = raw_body()
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=0)

    def refuse() -> None:
        raise ConnectionError("the broker refused the connection")

    async def scenario() -> None:
        for probe in autoscaler.probes.values():
            probe.during = refuse  # type: ignore[attr-defined]
        await autoscaler.cycle()
        assert kube.events == [] and runtime.fleets[KEY].broker_error is None
        await reconcile(runtime, kube, raw)
        await autoscaler.cycle()
        await autoscaler.cycle()
        assert kube.events == ["BrokerUnreachable"] and kube.statuses == 1

    asyncio.run(scenario())


def test_children_not_listed_after_a_restart_do_not_make_the_learned_generation_true(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The object's resume reports a listing refused before any reconcile ran: the
    generation learned from the index (edited while no operator ran) is not in force."""
    monkeypatch.setattr(handlers, "LISTING_WAIT", 0.01)
    feed = ("PodDisruptionBudget", None)
    kube = settled_cluster()
    raw = raw_body()
    raw["metadata"]["generation"] = 4
    raw["spec"]["image"] = "metamapper-worker:9.9.9"
    raw["status"] = copy.deepcopy(kube.status)
    runtime, autoscaler = listed_process(kube, raw, waiting=0)
    children = Children([feed])
    children.refused(feed, "listing PodDisruptionBudgets in all namespaces: 403 forbidden")

    async def scenario() -> None:
        await autoscaler.cycle()
        assert runtime.fleets[KEY].listed and runtime.fleets[KEY].generation == 4
        with pytest.raises(kopf.TemporaryError):
            await handlers.apply_spec(body=kopf.Body(raw), reason=kopf.Reason.RESUME,
                                      memo=kopf.Memo(runtime=runtime, children=children))

    asyncio.run(scenario())
    assert kube.status["observedGeneration"] != 4
    ready = next(c for c in kube.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "CannotListPodDisruptionBudgets")
