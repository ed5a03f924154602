"""A new operator process (a restart, a failover to a new leader) meeting objects whose
children and status already match: it writes nothing and reads nothing per object, its
reconcile and its autoscaler's first cycle alike. Small fakes of the Kube edge and the
broker (the real thing: bench/churn.py)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from metamapper_operator import handlers
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.builders import SPEC_HASH
from metamapper_operator.config import Config
from metamapper_operator.references import SecretCache
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY
from tests.unit.test_wiring import FakeKube, FakeProbe

KEY = Key("restart", "mm")


@dataclass
class ClusterKube(FakeKube):
    """Keeps what the operator wrote: the children applied, the status as merged."""

    children: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    uid_reads: int = 0

    async def apply(self, obj: Mapping[str, Any]) -> None:
        await super().apply(obj)
        self.children[obj["kind"], obj["metadata"]["name"]] = obj

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
    runtime = Runtime(config=Config(poll_seconds=1), kube=kube,  # type: ignore[arg-type]
                      secrets=SecretCache(kube.read_secret, 60))
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
