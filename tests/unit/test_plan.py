"""What a reconcile writes, decided before any write: only what differs, in order, each
with the Event that announces it."""

from __future__ import annotations

from typing import Any

from metamapper_operator.builders import SPEC_HASH
from metamapper_operator.plan import Apply, Delete, Note, Scale, children_plan, summarised
from metamapper_operator.status import DeploymentState


def obj(kind: str, name: str, spec_hash: str, replicas: int = 1) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "annotations": {SPEC_HASH: spec_hash}},
            "spec": {"replicas": replicas}}


def deployment(name: str, replicas: int = 1, foreign: str = "") -> DeploymentState:
    return DeploymentState(name=name, spec_hash="d", replicas=replicas, foreign=foreign)


def test_nothing_differs_nothing_is_written() -> None:
    desired = [obj("ConfigMap", "mm-celery", "c"), obj("Deployment", "mm-default", "d")]
    existing = {("ConfigMap", "mm-celery"): "c", ("Deployment", "mm-default"): "d"}
    plan = children_plan(desired, existing, existing, {"mm-default": deployment("mm-default")},
                         {"mm-default": 1}, {})
    assert plan.actions == () and plan.settled


def test_new_changed_resized_and_unwanted_children_in_order() -> None:
    desired = [obj("ConfigMap", "mm-celery", "c2"), obj("Deployment", "mm-new", "n"),
               obj("Deployment", "mm-default", "d", replicas=3)]
    existing = {("ConfigMap", "mm-celery"): "c1", ("Deployment", "mm-default"): "d",
                ("Service", "mm-flower"): "f", ("ConfigMap", "kept"): "k"}
    plan = children_plan(desired, existing, {**existing, ("Deployment", "mm-new"): None},
                         {"mm-default": deployment("mm-default")}, {"mm-default": 1}, {})
    assert [type(a).__name__ for a in plan.actions] == ["Apply", "Apply", "Scale", "Delete"]
    updated, created, scaled, deleted = plan.actions
    assert isinstance(updated, Apply) and updated.note().reason == "Updated"
    assert isinstance(created, Apply) and created.note().message == "Deployment mm-new created"
    assert scaled == Scale("mm-default", 1, 3)
    assert deleted == Delete("Service", "mm-flower")   # a ConfigMap is never orphaned
    assert plan.settled


def test_fields_another_manager_took_are_restored_once_per_change_of_theirs() -> None:
    desired = [obj("Deployment", "mm-default", "d")]
    existing = {("Deployment", "mm-default"): "d"}
    edited = {"mm-default": deployment("mm-default", foreign="kubectl-1")}
    (repair,) = children_plan(desired, existing, existing, edited, {"mm-default": 1},
                              {}).actions
    assert isinstance(repair, Apply) and (repair.verb, repair.foreign) == ("Repaired",
                                                                            "kubectl-1")
    assert children_plan(desired, existing, existing, edited, {"mm-default": 1},
                         {"mm-default": "kubectl-1"}).actions == ()


def test_a_child_known_only_from_the_operators_own_write_is_not_settled() -> None:
    desired = [obj("ConfigMap", "mm-celery", "c")]
    plan = children_plan(desired, {}, {("ConfigMap", "mm-celery"): "c"}, {}, {}, {})
    assert plan.actions == () and not plan.settled


def test_the_writes_of_one_reconcile_are_announced_once_per_reason() -> None:
    notes = [Note("Normal", "Created", "ConfigMap mm-celery created"),
             Note("Normal", "Deleted", "Service mm-flower deleted: no longer in the spec"),
             Note("Normal", "Created", "Deployment mm-default created")]
    assert summarised(notes) == [
        Note("Normal", "Created", "ConfigMap mm-celery created; Deployment mm-default created"),
        Note("Normal", "Deleted", "Service mm-flower deleted: no longer in the spec")]
    assert summarised([]) == []
