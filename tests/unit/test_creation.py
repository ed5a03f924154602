"""What a new Metamapper costs the apiserver: its children, one Event that names them
all, and no read of the object itself. Small fakes of the Kube edge (the real figures:
bench/churn.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from metamapper_operator import handlers
from metamapper_operator.children import Child, Children
from metamapper_operator.state import RECONCILES_AT_ONCE
from metamapper_operator.status import DeploymentState
from tests.unit.test_restart import KEY, ClusterKube, operator_process, raw_body


def test_a_new_object_is_announced_by_one_event_naming_its_children() -> None:
    kube = ClusterKube()
    runtime, _ = operator_process(kube)
    asyncio.run(handlers.reconcile(kopf.Body(raw_body()), runtime, {}, {}))
    assert len(kube.applied) >= 3 and kube.events == ["Created"]


def test_a_new_object_from_its_own_watch_event_is_not_read_again() -> None:
    """The create handler's body is the watch's news of the object: its uid needs no GET
    (only the resync, from kopf's index, may hold an object deleted unseen)."""
    kube = ClusterKube()
    runtime, _ = operator_process(kube)
    children = Children(())
    asyncio.run(handlers.apply_spec(body=kopf.Body(raw_body()), memo=kopf.Memo(
        runtime=runtime, children=children)))
    assert kube.applied and kube.uid_reads == 0


@dataclass
class SlowKube(ClusterKube):
    """Each apply takes a moment; counts the reconciles writing at once."""

    writing: int = 0
    most: int = 0

    async def apply(self, obj: Mapping[str, Any]) -> None:
        self.writing += 1
        self.most = max(self.most, self.writing)
        await asyncio.sleep(0.001)
        self.writing -= 1


def test_a_burst_of_creations_is_reconciled_a_bounded_number_at_a_time() -> None:
    kube = SlowKube()
    runtime, _ = operator_process(kube)

    def body(n: int) -> kopf.Body:
        raw = raw_body()
        raw["metadata"].update(name=f"mm-{n}", uid=f"u-{n}")
        return kopf.Body(raw)

    async def burst() -> None:
        await asyncio.gather(*(handlers.reconcile(body(n), runtime, {}, {}, from_event=True)
                               for n in range(3 * RECONCILES_AT_ONCE)))

    asyncio.run(burst())
    assert len(runtime.fleets) == 3 * RECONCILES_AT_ONCE
    assert kube.most == RECONCILES_AT_ONCE


def test_a_deployment_its_controller_has_not_seen_yet_writes_no_status() -> None:
    """The Deployment controller's news of a new or changed Deployment follows within
    moments: the status is written once, from that."""
    kube = ClusterKube()
    runtime, _ = operator_process(kube)
    children = Children(())
    asyncio.run(handlers.reconcile(kopf.Body(raw_body()), runtime, {}, {}, from_event=True))
    written = kube.statuses
    for observed in (0, 1):
        for name in ("mm-default", "mm-scheduler"):
            children.seen(Child(KEY, "Deployment", name, "h", DeploymentState(
                name=name, spec_hash="h", replicas=0, generation=1,
                observed_generation=observed)))
        asyncio.run(handlers.publish_readiness(runtime, children, KEY))
    assert kube.statuses == written + 1
    assert kube.status["conditions"][1]["reason"] == "Settled"
