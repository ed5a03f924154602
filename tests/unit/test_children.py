"""The children's records (pure) and the status work they ask for (coalesced)."""

from __future__ import annotations

import asyncio
from typing import Any

from metamapper_operator.children import KINDS, Children, child_of
from metamapper_operator.coalescing import Coalescer
from metamapper_operator.state import Key


def body(name: str, owner: str = "mm", namespace: str = "ns", spec_hash: str = "h",
         **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "generation": 2,
                         "labels": {"app.kubernetes.io/instance": owner},
                         "annotations": {"metamapper.io/spec-hash": spec_hash}}, **extra}


def test_a_deployment_is_recorded_with_its_size_and_readiness() -> None:
    child = child_of("Deployment", body("mm-default", spec={"replicas": 3}, status={
        "readyReplicas": 2, "updatedReplicas": 3, "observedGeneration": 2}))
    assert child.owner == Key("ns", "mm") and child.spec_hash == "h"
    assert child.deployment is not None
    assert (child.deployment.replicas, child.deployment.ready, child.deployment.updated,
            child.deployment.generation, child.deployment.observed_generation) == (3, 2, 3, 2, 2)
    assert child_of("ConfigMap", body("mm-celery")).deployment is None


def test_children_are_kept_by_owner_until_deleted() -> None:
    children = Children([])
    children.seen(child_of("Deployment", body("mm-default", spec={"replicas": 1})))
    children.seen(child_of("ConfigMap", body("mm-celery", spec_hash="c1")))
    children.seen(child_of("ConfigMap", body("mm-celery", spec_hash="c2")))   # changed
    children.seen(child_of("Service", body("other-flower", owner="other")))
    assert set(children.deployments(Key("ns", "mm"))) == {"mm-default"}
    assert children.of(Key("ns", "mm")).hashes == {("ConfigMap", "mm-celery"): "c2"}
    children.gone(child_of("Deployment", body("mm-default")))
    children.gone(child_of("ConfigMap", body("mm-celery")))
    assert not children.of(Key("ns", "mm")) and children.deployments(Key("ns", "mm")) == {}
    assert children.of(Key("ns", "other")).hashes == {("Service", "other-flower"): "h"}
    children.gone(child_of("Service", body("never-seen")))   # nothing to forget: no error


def test_a_listing_replaces_its_kind_in_its_namespace_only() -> None:
    children = Children([])
    for namespace in ("a", "b"):
        children.seen(child_of("ConfigMap", body("mm-celery", namespace=namespace)))
        children.seen(child_of("Deployment", body("mm-default", namespace=namespace)))
    children.replace(("ConfigMap", "a"), [child_of("ConfigMap", body("mm-new", namespace="a"))])
    assert children.of(Key("a", "mm")).hashes == {("ConfigMap", "mm-new"): "h"}
    assert set(children.deployments(Key("a", "mm"))) == {"mm-default"}   # another kind
    assert children.of(Key("b", "mm")).hashes == {("ConfigMap", "mm-celery"): "h"}
    children.replace(("Deployment", None), [])   # every namespace
    assert children.deployments(Key("a", "mm")) == children.deployments(Key("b", "mm")) == {}


def test_children_are_listed_once_every_feed_has_been() -> None:
    feeds = [(kind.kind, namespace) for kind in KINDS for namespace in ("a", "b")]
    children = Children(feeds)
    for feed in feeds[:-1]:
        children.replace(feed, [])
        assert not children.listed.is_set()
    children.replace(feeds[-1], [])
    assert children.listed.is_set()
    assert KINDS[0].path(None) == "/apis/apps/v1/deployments"
    assert KINDS[1].path("a") == "/api/v1/namespaces/a/configmaps"


def test_work_asked_for_during_a_burst_is_done_once_per_key() -> None:
    async def scenario() -> list[str]:
        done: list[str] = []
        running = 0
        most = 0

        async def work(key: str) -> None:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            if key == "bad":
                raise RuntimeError("broken")
            done.append(key)

        coalescer: Coalescer[str] = Coalescer(work, concurrency=2)
        task = asyncio.create_task(coalescer.run())
        for key in ("a", "b", "a", "bad", "c", "a", "b"):
            coalescer.ask(key)
        await asyncio.sleep(0.2)
        coalescer.ask("a")   # after a failure, work goes on
        await asyncio.sleep(0.05)
        task.cancel()
        assert most == 2
        return done

    assert asyncio.run(scenario()) == ["a", "b", "c", "a"]


def test_a_child_record_is_small() -> None:
    """Slots: a record per child, tens of thousands of them in a large cluster."""
    child = child_of("Deployment", body("mm-default"))
    assert not hasattr(child, "__dict__") and not hasattr(child.deployment, "__dict__")


def test_a_deployment_past_its_progress_deadline_is_recorded_as_stalled() -> None:
    child = child_of("Deployment", body("mm-default", spec={"replicas": 1}, status={
        "observedGeneration": 2, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "mm-default-5d" has timed out progressing.'}]}))
    assert child.deployment is not None and child.deployment.stall is not None
    assert child.deployment.stall.reason == "ProgressDeadlineExceeded"
    assert "timed out progressing" in child.deployment.stall.message
    quota = child_of("Deployment", body("mm-default", status={"conditions": [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
         "message": "pods is forbidden: exceeded quota"}]}))
    assert quota.deployment is not None and quota.deployment.stall is not None
    assert quota.deployment.stall.reason == "FailedCreate"
    progressing = child_of("Deployment", body("mm-default", status={"conditions": [
        {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}))
    assert progressing.deployment is not None and progressing.deployment.stall is None


def test_children_know_which_deployments_have_not_settled() -> None:
    """The only Deployments whose pods are worth a look: cheap to know at 10,000 objects."""
    mm, other = Key("ns", "mm"), Key("other", "mm")
    ready = {"replicas": 2}, {"readyReplicas": 2, "updatedReplicas": 2,
                              "observedGeneration": 2}
    children = Children([])
    children.seen(child_of("Deployment", body("mm-default", spec={"replicas": 2})))
    children.seen(child_of("Deployment", body("mm-default", namespace="other",
                                              spec={"replicas": 2})))
    assert children.unsettled == {(mm, "mm-default"), (other, "mm-default")}
    children.seen(child_of("Deployment", body("mm-default", spec=ready[0], status=ready[1])))
    assert children.unsettled == {(other, "mm-default")}
    children.replace(("Deployment", "other"), [])
    assert children.unsettled == set()
    children.seen(child_of("Deployment", body("mm-default", spec={"replicas": 2})))
    children.gone(child_of("Deployment", body("mm-default")))
    assert children.unsettled == set()
    children.seen(child_of("Deployment", body("mm-default", spec={"replicas": 2})))
    children.replace(("Deployment", None), [])
    assert children.unsettled == set()
