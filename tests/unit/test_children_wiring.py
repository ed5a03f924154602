"""Wiring of the Standalone scheduler's gate and of Flower's Service, with small fakes of
the Kube edge (the real API paths run in tests/operator/test_rbac.py and tests/e2e)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import kopf
import pytest

from metamapper_operator import handlers
from metamapper_operator.builders import ONE_BEAT_GATE
from metamapper_operator.kube import GatedPods, KubeError
from metamapper_operator.model import parse
from tests.unit.sample import BODY
from tests.unit.test_wiring import FakeKube, runtime_of, silent_apiserver


@dataclass
class GateKube(FakeKube):
    pods_by_gate: GatedPods = field(default_factory=lambda: GatedPods((), ()))
    ungated: list[str] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)

    async def gated_pods(self, namespace: str, labels: Mapping[str, str], gate: str
                         ) -> GatedPods:
        assert gate == ONE_BEAT_GATE
        assert labels["app.kubernetes.io/component"] == "scheduler"
        return self.pods_by_gate

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"auth": "admin:pw"} if name == "fa" else None

    async def ungate_pod(self, namespace: str, name: str) -> None:
        self.ungated.append(name)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))


@pytest.mark.parametrize(("pods", "ungated"), [
    (GatedPods(("new",), ()), ["new"]),              # alone: may start
    (GatedPods(("new",), ("old",)), []),             # the old one still exists (terminating)
    (GatedPods(("first", "second"), ()), ["first"]),  # two gated: only the oldest
    (GatedPods((), ("running",)), []),               # nothing to lift
])
def test_a_gated_scheduler_pod_starts_only_when_no_other_exists(
        pods: GatedPods, ungated: list[str]) -> None:
    kube = GateKube(pods_by_gate=pods)
    asyncio.run(handlers.one_beat(namespace="ns", labels={
        "app.kubernetes.io/instance": "mm"}, memo=kopf.Memo(runtime=runtime_of(kube))))
    assert kube.ungated == ungated


def test_flowers_service_is_deleted_when_flower_is_turned_off() -> None:
    kube = GateKube()
    raw = copy.deepcopy(BODY)
    raw["metadata"].update(namespace="ns", name="mm", uid="u-1")
    asyncio.run(handlers.reconcile(kopf.Body(raw), runtime_of(kube), {},
                                   {("Service", "mm-flower"): "old-hash"}))
    assert ("Service", "mm-flower") in kube.deleted
    on = copy.deepcopy(raw)
    on["spec"]["flower"] = {"enabled": True, "basicAuthSecretRef": {"name": "fa"}}
    kube = GateKube()
    asyncio.run(handlers.reconcile(kopf.Body(on), runtime_of(kube), {}, {}))
    assert "mm-flower" in kube.applied and not kube.deleted
    # A Secret that is not there holds Flower back (never run without auth); the rest runs.
    missing = copy.deepcopy(on)
    missing["spec"]["flower"]["basicAuthSecretRef"]["name"] = "gone"
    kube = GateKube()
    asyncio.run(handlers.reconcile(kopf.Body(missing), runtime_of(kube), {}, {}))
    assert "mm-flower" not in kube.applied and "mm-default" in kube.applied
    assert "SecretMissing" in kube.events and "InvalidSpec" not in kube.events


def test_the_new_requests_have_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """An apiserver that accepts the connection and never answers."""
    async def scenario() -> None:
        async with silent_apiserver(monkeypatch) as kube:
            for call in (kube.gated_pods("ns", {"a": "b"}, ONE_BEAT_GATE),
                         kube.ungate_pod("ns", "p"), kube.delete("Service", "ns", "s")):
                with pytest.raises(KubeError):
                    await asyncio.wait_for(call, 5)

    asyncio.run(scenario())


def test_the_metamapper_index_keeps_what_a_reconcile_reads() -> None:
    raw = copy.deepcopy(BODY)
    raw["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    raw["metadata"]["annotations"] = {
        "metamapper.io/last-handled-configuration": '{"spec": "..."}',
        "kubectl.kubernetes.io/last-applied-configuration": '{"spec": "..."}',
        "autoscaling.metamapper.io/paused": "true"}
    raw["status"] = {"observedGeneration": 1}
    (entry,) = asyncio.run(handlers.metamappers("ns", "mm", kopf.Body(raw))).values()
    kept = handlers.indexed_body(entry)
    assert "managedFields" not in kept["metadata"] and "status" not in kept
    assert kept["metadata"]["annotations"] == {"autoscaling.metamapper.io/paused": "true"}
    del raw["metadata"]["managedFields"], raw["status"]
    raw["metadata"]["annotations"] = {"autoscaling.metamapper.io/paused": "true"}
    assert kept == raw
    # The resync's inputs from the index are the handler's from the full body.
    full = copy.deepcopy(BODY)
    full["metadata"]["annotations"] = {
        "metamapper.io/last-handled-configuration": '{"spec": "..."}',
        "autoscaling.metamapper.io/paused": "true"}
    assert handlers.inputs_of(kopf.Body(full), {}, {}) == handlers.inputs_of(kept, {}, {})
    assert parse(kept) == parse(kopf.Body(full))
