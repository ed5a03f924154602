"""One object's reconcile is planned, then carried out, inside one boundary: whatever it
meets (an API error, a value nobody foresaw) becomes that object's status (Ready False, a
reason, a scrubbed message) and one Warning event, and observedGeneration advances only
when that generation's plan was carried out or refused as an invalid spec."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
import pytest

from metamapper_operator import handlers
from metamapper_operator.children import Child, Children
from metamapper_operator.health import Health
from metamapper_operator.kube import KubeError
from metamapper_operator.rollouts import LOOK_EVERY, LOOKS_PER_PASS, STUCK_AFTER, Rollouts
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY
from tests.unit.test_wiring import FakeKube, runtime_of

KEY = Key("ns", "mm")
PASSWORD = "hunter2-s3cret"


@dataclass
class StatusKube(FakeKube):
    """A FakeKube that keeps the status as the apiserver would (merge patches), every
    event with its type, and fails the calls it is told to."""

    notes: list[tuple[str, str, str]] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    undecodable: set[str] = field(default_factory=set)   # Secrets whose bytes are not UTF-8
    refuse_apply: set[str] = field(default_factory=set)  # names whose apply fails
    deleted: list[tuple[str, str]] = field(default_factory=list)

    async def event(self, involved: Mapping[str, Any], type: str, reason: str,
                    message: str) -> None:
        await super().event(involved, type, reason, message)
        self.notes.append((type, reason, message))

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        if name in self.undecodable:   # what Kube.read_secret meets: bytes.decode fails
            b"\xff\xfe".decode()
        return self.secrets.get(name)

    async def apply(self, obj: Mapping[str, Any]) -> None:
        if obj["metadata"]["name"] in self.refuse_apply:
            raise KubeError(f"applying {obj['kind']} {obj['metadata']['name']}",
                            TimeoutError("no answer"))
        await super().apply(obj)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))


def body_of(generation: int, **spec: Any) -> kopf.Body:
    raw = copy.deepcopy(BODY)
    raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1",
                           generation=generation)
    raw["spec"].update(spec)
    return kopf.Body(raw)


def condition(kube: StatusKube, kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in kube.status["conditions"] if c["type"] == kind)
    return found


async def reconcile(runtime: Runtime, body: kopf.Body) -> type[Exception] | None:
    """Reconcile ``body`` as kopf would call it; the kopf error it raised, if any."""
    try:
        await handlers.reconcile(body, runtime, {}, {})
    except (kopf.TemporaryError, kopf.PermanentError) as err:
        return type(err)
    return None


def warnings(kube: StatusKube) -> list[tuple[str, str]]:
    return [(reason, message) for type_, reason, message in kube.notes if type_ == "Warning"]


def test_an_unreadable_secret_leaves_the_old_generation_in_force_and_says_so() -> None:
    """A referenced Secret whose value is not UTF-8: not a SpecError nor a KubeError."""
    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        assert await reconcile(runtime, body_of(1)) is None
        assert kube.status["observedGeneration"] == 1
        assert condition(kube, "Ready")["reason"] != "ReconcileFailed"
        applied = list(kube.applied)

        kube.undecodable.add("broker")
        moved = body_of(2, broker={"urlSecretRef": {"name": "broker", "key": "url"}})
        assert await reconcile(runtime, moved) is kopf.PermanentError  # no crash loop
        assert kube.status["observedGeneration"] == 1   # generation 2 is not in force
        ready = condition(kube, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ReconcileFailed")
        assert "UnicodeDecodeError" in ready["message"]
        assert condition(kube, "Degraded")["status"] == "True"
        assert [reason for reason, _ in warnings(kube)] == ["ReconcileFailed"]
        assert kube.applied == applied                   # nothing of generation 2 done
        state = runtime.fleets[KEY]
        assert state.fleet is not None and state.fleet.broker.url_secret is None

        # The same failure again: no second event; the resync keeps trying it.
        assert await reconcile(runtime, moved) is kopf.PermanentError
        assert len(warnings(kube)) == 1
        assert not handlers.unchanged(runtime, KEY, handlers.inputs_of(moved, {}, {}))

        # Fixed: generation 2 is carried out and the fault is gone.
        kube.undecodable.clear()
        kube.secrets["broker"] = {"url": "redis://redis:6379/1"}
        runtime.secrets.forget(KEY.namespace)
        assert await reconcile(runtime, moved) is None
        assert kube.status["observedGeneration"] == 2
        assert condition(kube, "Ready")["reason"] != "ReconcileFailed"
        assert runtime.fleets[KEY].faults == {}

    asyncio.run(scenario())


def test_a_bug_met_while_planning_changes_nothing_and_hides_the_secret(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        assert await reconcile(runtime, body_of(1)) is None
        writes, notes = list(kube.applied), list(kube.notes)

        def broken(*_: Any, **__: Any) -> Any:
            raise TypeError(f"cannot render redis://:{PASSWORD}@redis:6379/0")

        monkeypatch.setattr(handlers, "desired_objects", broken)
        changed = body_of(2, image="worker:2")
        assert await reconcile(runtime, changed) is kopf.PermanentError
        assert kube.applied == writes
        assert kube.status["observedGeneration"] == 1
        assert PASSWORD not in str(kube.status) and PASSWORD not in str(kube.notes)
        assert kube.notes[len(notes):] == [("Warning", "ReconcileFailed", condition(
            kube, "Ready")["message"])]

    asyncio.run(scenario())


def test_a_write_that_fails_half_way_is_retried_and_announced_once() -> None:
    async def scenario() -> None:
        kube = StatusKube(refuse_apply={"mm-default"})
        runtime = runtime_of(kube)
        assert await reconcile(runtime, body_of(1)) is kopf.TemporaryError
        assert "observedGeneration" not in kube.status or kube.status[
            "observedGeneration"] == 0
        ready = condition(kube, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ApplyFailed")
        assert "applying Deployment mm-default" in ready["message"]
        assert [reason for reason, _ in warnings(kube)] == ["ApplyFailed"]
        # What was written before the failure is announced, what was not is not.
        created = [message for _, reason, message in kube.notes if reason == "Created"]
        assert created == [f"ConfigMap {name} created" for name in kube.applied]

        kube.refuse_apply.clear()
        assert await reconcile(runtime, body_of(1)) is None
        assert kube.status["observedGeneration"] == 1
        assert condition(kube, "Degraded")["reason"] != "ApplyFailed"
        assert len(warnings(kube)) == 1

    asyncio.run(scenario())


def test_an_invalid_spec_is_that_generations_answer() -> None:
    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        assert await reconcile(runtime, body_of(1)) is None
        unnamed = body_of(2, pools=[{"name": "default", "queues": []}])
        assert await reconcile(runtime, unnamed) is None
        assert kube.status["observedGeneration"] == 2
        assert condition(kube, "InvalidSpec")["status"] == "True"
        assert [reason for reason, _ in warnings(kube)] == ["InvalidSpec"]

    asyncio.run(scenario())


@pytest.mark.parametrize("replicas", ["²"])
def test_a_pinned_size_that_isdigit_accepts_and_int_refuses_is_never_ready(
        replicas: str) -> None:
    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        assert await reconcile(runtime, body_of(1)) is None
        pinned = body_of(2)
        pinned["metadata"]["annotations"] = {"autoscaling.metamapper.io/paused-replicas":
                                             replicas}
        await reconcile(runtime, pinned)
        ready = condition(kube, "Ready")
        assert ready["status"] == "False"
        # Either refused (that generation's answer) or a fault (generation 1 in force).
        if ready["reason"] == "InvalidSpec":
            assert kube.status["observedGeneration"] == 2
        else:
            assert kube.status["observedGeneration"] == 1

    asyncio.run(scenario())


@dataclass
class PodKube(StatusKube):
    """Pods as the API shows them, by Deployment; counts the listings."""

    pods_of: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    listings: int = 0

    async def pod_bodies(self, namespace: str, labels: Mapping[str, str]
                         ) -> list[dict[str, Any]]:
        self.listings += 1
        pool = labels.get("metamapper.io/pool", labels["app.kubernetes.io/component"])
        return self.pods_of.get(f"{labels['app.kubernetes.io/instance']}-{pool}", [])


def waiting(reason: str) -> list[dict[str, Any]]:
    return [{"metadata": {"name": "mm-default-1"}, "status": {"containerStatuses": [
        {"name": "worker", "state": {"waiting": {"reason": reason,
                                                 "message": "image not on the node"}}}]}}]


def deployment(name: str, owner: str = "mm", ready: int = 0) -> Child:
    return Child(Key(KEY.namespace, owner), "Deployment", name, "h", DeploymentState(
        name=name, spec_hash="h", replicas=1, ready=ready, updated=ready, generation=1,
        observed_generation=1))


def test_a_rollout_whose_pod_cannot_pull_its_image_is_degraded_with_the_pods_reason(
        ) -> None:
    async def scenario() -> None:
        now = [0.0]
        kube = PodKube(pods_of={"mm-default": waiting("ImagePullBackOff")})
        runtime = runtime_of(kube)
        children = Children([])
        children.seen(deployment("mm-default"))
        children.seen(deployment("mm-scheduler", ready=1))
        await handlers.reconcile(body_of(1), runtime, children.deployments(KEY), {})
        rollouts = Rollouts(runtime, children, clock=lambda: now[0])
        await rollouts.look()
        assert kube.listings == 0            # a rollout takes a while: nothing to read yet
        now[0] = STUCK_AFTER
        await rollouts.look()
        assert kube.listings == 1
        ready, degraded = condition(kube, "Ready"), condition(kube, "Degraded")
        assert (ready["status"], ready["reason"]) == ("False", "ImagePullBackOff")
        assert (degraded["status"], degraded["reason"]) == ("True", "ImagePullBackOff")
        assert "pod mm-default-1 container worker" in degraded["message"]
        assert [reason for reason, _ in warnings(kube)] == ["ImagePullBackOff"]
        now[0] += LOOK_EVERY
        await rollouts.look()                # looked at again, the same: no new event
        assert kube.listings == 2 and len(warnings(kube)) == 1
        now[0] += LOOK_EVERY
        await rollouts.look()                # the pause between looks doubles
        assert kube.listings == 2

        children.seen(deployment("mm-default", ready=1))   # fixed and rolled out
        await rollouts.look()
        assert condition(kube, "Ready")["status"] == "True"
        assert runtime.fleets[KEY].faults == {} and rollouts.due == {}

    asyncio.run(scenario())


def test_pods_are_read_for_a_bounded_number_of_deployments_per_pass() -> None:
    async def scenario() -> None:
        kube = PodKube()
        runtime = runtime_of(kube)
        children = Children([])
        for n in range(3 * LOOKS_PER_PASS):
            children.seen(deployment(f"x{n}-default", owner=f"x{n}"))
        now = [0.0]
        rollouts = Rollouts(runtime, children, clock=lambda: now[0])
        await rollouts.look()
        now[0] = STUCK_AFTER
        await rollouts.look()
        looked = [due for due in rollouts.due.values() if due.pause > LOOK_EVERY]
        assert len(looked) == LOOKS_PER_PASS

    asyncio.run(scenario())


def test_children_that_cannot_be_listed_are_reported_by_every_object_waiting_for_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch refused for good (RBAC without list on a kind) would hold every reconcile
    with nothing said: after a bounded wait each object says why, once."""
    monkeypatch.setattr(handlers, "LISTING_WAIT", 0.01)
    feed = ("PodDisruptionBudget", None)
    refusal = ("listing PodDisruptionBudgets in all namespaces: 403 poddisruptionbudgets"
               '.policy is forbidden: User "op" cannot list resource "poddisruptionbudgets"')

    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        children = Children([feed])
        children.refused(feed, refusal)
        memo = kopf.Memo(runtime=runtime, children=children)
        with pytest.raises(kopf.TemporaryError):
            await handlers.apply_spec(body=body_of(1), memo=memo)
        ready = condition(kube, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "CannotListPodDisruptionBudgets")
        assert "cannot list resource \"poddisruptionbudgets\"" in ready["message"]
        assert [reason for reason, _ in warnings(kube)] == ["CannotListPodDisruptionBudgets"]
        with pytest.raises(kopf.TemporaryError):   # kopf's retry: no second event
            await handlers.apply_spec(body=body_of(1), memo=memo)
        assert len(warnings(kube)) == 1 and kube.applied == []

        # Granted: the listing arrives, the reconcile goes on and the fault is gone.
        children.replace(feed, [])
        await handlers.apply_spec(body=body_of(1), memo=memo)
        assert kube.status["observedGeneration"] == 1 and kube.applied
        assert runtime.fleets[KEY].faults == {}

    asyncio.run(scenario())


def test_a_listing_that_is_only_slow_is_waited_for_without_a_word(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing every child of 10,000 objects takes a while: no fault, no status write."""
    monkeypatch.setattr(handlers, "LISTING_WAIT", 0.01)
    feed = ("Deployment", None)

    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        children = Children([feed])
        memo = kopf.Memo(runtime=runtime, children=children)
        waiting = asyncio.create_task(handlers.apply_spec(body=body_of(1), memo=memo))
        for _ in range(5):   # several bounded waits go by
            await asyncio.sleep(0.01)
        assert not waiting.done() and kube.notes == [] and kube.statuses == 0
        children.replace(feed, [])
        await waiting
        assert kube.status["observedGeneration"] == 1 and not warnings(kube)

    asyncio.run(scenario())


def test_healthz_names_a_refused_listing_without_failing() -> None:
    """A restart cannot grant a permission, and would stop every fleet's autoscaling."""
    problems: list[str | None] = [None]
    health = Health(checks=[lambda: None], notes=[lambda: problems[0]])
    assert health.report() == (200, {"role": "standby", "problems": [], "warnings": []})
    problems[0] = "listing Deployments in all namespaces: 403 forbidden"
    assert health.report() == (200, {"role": "standby", "problems": [],
                                     "warnings": [problems[0]]})
