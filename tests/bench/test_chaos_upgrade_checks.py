"""What the upgrade test checks, off the node: the new CRD's defaults over a stored spec,
the pools' rollouts read from Deployments, ReplicaSets and pods, the pods a rollout
replaced, the rollouts docs/upgrading.md says an upgrade from 0.1.0 does not do, and which
Warning events an upgrade explains."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from _chaos_ledger import Fault
from _chaos_upgrade_checks import (
    FleetSeen,
    PoolSeen,
    defaulted,
    earlier_release_warnings,
    event_time,
    fleet_findings,
    pool_findings,
    pools_seen,
    rendered_hashes,
    replaced_pods,
    rollouts_the_notes_rule_out,
    rolls_from_0_1_0,
    spec_schema,
    unexplained_warnings,
)
from chaos import RedisBroker, fleet_objects
from metamapper_operator import crd

REPO = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {
    "a": {"type": "integer", "default": 1},
    "b": {"type": "object", "default": {}, "properties": {
        "c": {"type": "boolean", "default": True}, "d": {"type": "string"}}},
    "pools": {"type": "array", "items": {"type": "object", "properties": {
        "n": {"type": "integer", "default": 2}}}},
    "labels": {"type": "object", "additionalProperties": {
        "type": "object", "properties": {"e": {"type": "integer", "default": 3}}}},
}}


def test_defaults_fill_what_is_absent_at_every_depth_and_nothing_else() -> None:
    stored = {"a": 5, "pools": [{}, {"n": 7}], "labels": {"x": {}}}
    assert defaulted(SCHEMA, stored) == {"a": 5, "b": {"c": True}, "pools": [{"n": 2}, {"n": 7}],
                                         "labels": {"x": {"e": 3}}}
    assert stored == {"a": 5, "pools": [{}, {"n": 7}], "labels": {"x": {}}}   # not changed
    assert defaulted(SCHEMA, {"b": {"c": False, "d": "x"}})["b"] == {"c": False, "d": "x"}


def this_crd_spec_schema() -> dict[str, Any]:
    return spec_schema(yaml.safe_load((REPO / "crds" / "metamapper.io_metamappers.yaml")
                                      .read_text()), crd.VERSION)


def test_a_fleet_written_before_the_new_crd_differs_only_by_its_defaults() -> None:
    schema = this_crd_spec_schema()
    spec = fleet_objects(RedisBroker(Path("/nonexistent"), "aof"), "workload:1")[1]["spec"]
    assert "warmUp" not in spec["pools"][0]["autoscaling"]
    now = defaulted(schema, spec)
    assert now["pools"][0]["autoscaling"]["warmUp"] == {"enabled": True, "replicas": 1}
    assert fleet_findings({"f": FleetSeen(spec, 1)}, {"f": FleetSeen(now, 1)}, schema) == []
    edited = {**now, "image": "workload:2"}
    assert fleet_findings({"f": FleetSeen(spec, 1)}, {"f": FleetSeen(edited, 2)}, schema) == [
        "f: generation 1 -> 2", "f: spec changed beyond the new defaults in image"]
    assert fleet_findings({"f": FleetSeen(spec, 1)}, {}, schema) == ["f: gone"]


def test_the_rendered_hashes_are_those_of_the_fleets_pools() -> None:
    body = fleet_objects(RedisBroker(Path("/nonexistent"), "aof"), "workload:1")[1]
    body["metadata"]["uid"] = "u-1"
    hashes = rendered_hashes(body, "redis")
    assert sorted(hashes) == ["fleet-redis-fast", "fleet-redis-slow"]
    body["spec"]["image"] = "workload:2"
    assert rendered_hashes(body, "redis")["fleet-redis-fast"] != hashes["fleet-redis-fast"]


def deployment(template_image: str, revision: str, *, done: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "fleet-redis-fast", "uid": "d-1", "generation": 2,
                         "labels": {"app.kubernetes.io/instance": "fleet-redis"},
                         "annotations": {"deployment.kubernetes.io/revision": revision,
                                         "metamapper.io/spec-hash": "h-" + template_image}},
            "spec": {"replicas": 2, "strategy": {"type": "RollingUpdate"},
                     "selector": {"matchLabels": {"pool": "fast"}},
                     "template": {"spec": {"containers": [{"image": template_image}]}}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2 if done
                       else 1, "readyReplicas": 2, "availableReplicas": 2}}


def replicaset(template_hash: str, revision: str) -> dict[str, Any]:
    return {"metadata": {"name": f"fleet-redis-fast-{template_hash}",
                         "labels": {"pod-template-hash": template_hash},
                         "annotations": {"deployment.kubernetes.io/revision": revision},
                         "ownerReferences": [{"uid": "d-1"}]}}


def pod(template_hash: str, suffix: str) -> dict[str, Any]:
    return {"metadata": {"name": f"fleet-redis-fast-{template_hash}-{suffix}",
                         "labels": {"pool": "fast", "pod-template-hash": template_hash}}}


def test_a_pool_read_from_its_deployment_its_replicasets_and_pods() -> None:
    seen = pools_seen([deployment("w:1", "1")], [replicaset("aaa", "1")],
                      [pod("aaa", "x1"), pod("aaa", "x2"), {"metadata": {
                          "name": "other", "labels": {"pool": "slow"}}}])
    assert seen == {"fleet-redis-fast": PoolSeen(
        "fleet-redis", "d-1", {"spec": {"containers": [{"image": "w:1"}]}}, "h-w:1",
        "RollingUpdate", True, "fleet-redis-fast-aaa", ())}
    mid = pools_seen([deployment("w:2", "2", done=False)],
                     [replicaset("aaa", "1"), replicaset("bbb", "2")],
                     [pod("aaa", "x1"), pod("bbb", "y1"),
                      {**pod("aaa", "x2"), "metadata": {**pod("aaa", "x2")["metadata"],
                                                        "deletionTimestamp": "now"}}])
    assert mid["fleet-redis-fast"].current == "fleet-redis-fast-bbb"
    assert mid["fleet-redis-fast"].stragglers == ("fleet-redis-fast-aaa-x1",)
    assert not mid["fleet-redis-fast"].rolled_out


def test_a_pool_rolls_to_a_new_replicaset_exactly_when_its_template_changed() -> None:
    before = pools_seen([deployment("w:1", "1")], [replicaset("aaa", "1")], [pod("aaa", "x")])
    same = pools_seen([deployment("w:1", "1")], [replicaset("aaa", "1")], [pod("aaa", "y")])
    rolled = pools_seen([deployment("w:2", "2")], [replicaset("aaa", "1"),
                                                   replicaset("bbb", "2")], [pod("bbb", "z")])
    assert pool_findings(before, same, {"fleet-redis-fast": "h-w:1"}) == []
    assert pool_findings(before, rolled, {"fleet-redis-fast": "h-w:2"}) == []
    assert pool_findings(before, rolled, {"fleet-redis-fast": "h-w:1"}) == [
        "fleet-redis-fast: spec hash h-w:2, this checkout renders h-w:1"]
    # a template that changed while the pods stayed, or the other way round
    stuck = {"fleet-redis-fast": PoolSeen(**{**vars(same["fleet-redis-fast"]),
                                             "template": {"changed": True}})}
    assert pool_findings(before, stuck, {"fleet-redis-fast": "h-w:1"}) == [
        "fleet-redis-fast: template changed, pods not replaced"]
    moved = {"fleet-redis-fast": PoolSeen(**{**vars(same["fleet-redis-fast"]),
                                             "current": "fleet-redis-fast-ccc"})}
    assert pool_findings(before, moved, {"fleet-redis-fast": "h-w:1"}) == [
        "fleet-redis-fast: pods replaced, template unchanged"]
    recreated = {"fleet-redis-fast": PoolSeen(**{**vars(same["fleet-redis-fast"]),
                                                 "uid": "d-2"})}
    assert pool_findings(before, recreated, {"fleet-redis-fast": "h-w:1"}) == [
        "fleet-redis-fast: the Deployment was replaced, not rolled"]
    assert pool_findings(before, {}, {"fleet-redis-fast": "h-w:1"}) == [
        "fleet-redis-fast: no Deployment", "fleet-redis-fast: gone"]


def test_the_replaced_pods_are_those_of_the_replicaset_a_rollout_left() -> None:
    before = pools_seen([deployment("w:1", "1")], [replicaset("aaa", "1")], [])
    rolled = pools_seen([deployment("w:2", "2")], [replicaset("bbb", "2")], [])
    ran_on = ["fleet-redis-fast-aaa-x1", "fleet-redis-fast-bbb-y1", "fleet-redis-slow-c-z",
              "fleet-redis-fast-aaa-x1"]
    assert replaced_pods(before, rolled, ran_on) == {
        "fleet-redis-fast": frozenset({"fleet-redis-fast-aaa-x1"})}
    assert replaced_pods(before, before, ran_on) == {}


def test_from_0_1_0_a_pool_rolls_only_if_its_fleets_settings_hold_remove() -> None:
    """docs/upgrading.md: from 0.1.0 no pool's template changes and no pod is replaced,
    but in a fleet whose celery.settings hold "$remove"; the soak's fleets hold none."""
    spec = fleet_objects(RedisBroker(Path("/nonexistent"), "aof"), "workload:1")[1]["spec"]
    assert not rolls_from_0_1_0(spec)
    removing = {**spec, "celery": {"settings": {**spec["celery"]["settings"], "beat_schedule": {
        "beat-scheduler-healthcheck": "$remove"}}}}
    assert rolls_from_0_1_0(removing)
    before = pools_seen([deployment("w:1", "1")], [replicaset("aaa", "1")], [pod("aaa", "x")])
    same = pools_seen([deployment("w:1", "1")], [replicaset("aaa", "1")], [pod("aaa", "y")])
    rolled = pools_seen([deployment("w:2", "2")], [replicaset("aaa", "1"),
                                                   replicaset("bbb", "2")], [pod("bbb", "z")])
    upgrade = Fault(-1, "helm-upgrade", "redis", frozenset(), 10.0, 20.0, 30.0)
    rollout = Fault(-1, "pool-rollout", "redis", frozenset({"fleet-redis-fast-aaa-x"}),
                    10.0, 20.0, 30.0)
    fleets = {"fleet-redis": FleetSeen(spec, 1)}
    assert rollouts_the_notes_rule_out(fleets, before, same, [upgrade]) == []
    assert rollouts_the_notes_rule_out(fleets, before, rolled, [upgrade, rollout]) == [
        "fleet-redis-fast: pod template changed at spec.containers[0].image",
        "fleet-redis-fast: pods replaced (fleet-redis-fast-aaa -> fleet-redis-fast-bbb)",
        "fleet-redis-fast: pool-rollout recorded on fleet-redis-fast-aaa-x"]
    # The template changed, its pods not replaced (yet): still against the notes.
    edited = {name: replace(seen, template={"metadata": {"annotations": {"a": "2"}}, **seen
                                            .template}) for name, seen in same.items()}
    assert rollouts_the_notes_rule_out(fleets, before, edited, [upgrade]) == [
        "fleet-redis-fast: pod template changed at metadata"]
    assert rollouts_the_notes_rule_out({"fleet-redis": FleetSeen(removing, 1)}, before, rolled,
                                       [upgrade, rollout]) == []


def event(reason: str, message: str, kind: str = "Warning", **stamps: Any) -> dict[str, Any]:
    return {"type": kind, "reason": reason, "message": message,
            "involvedObject": {"namespace": "chaos", "kind": "Pod", "name": "p"},
            "metadata": {"creationTimestamp": "2026-12-06T10:00:00Z"}, **stamps}


def test_a_warning_since_the_upgrade_is_explained_only_as_a_readiness_failure() -> None:
    since = event_time(event("x", "", lastTimestamp="2026-12-06T10:00:10Z")) + 0.4
    events = [
        event("Unhealthy", "Readiness probe failed: connection refused",
              lastTimestamp="2026-12-06T10:00:12Z"),
        event("Unhealthy", "Liveness probe failed: timeout", lastTimestamp="2026-12-06T10:00:12Z"),
        event("BrokerUnreachable", "old", lastTimestamp="2026-12-06T10:00:09Z"),
        event("BackOff", "restarting", eventTime="2026-12-06T10:00:10.500000Z",
              series={"lastObservedTime": "2026-12-06T10:00:20.000000Z"}),
        event("Killing", "Stopping container", kind="Normal",
              lastTimestamp="2026-12-06T10:00:12Z"),
    ]
    assert unexplained_warnings(events, since) == [
        "chaos/Pod/p Unhealthy: Liveness probe failed: timeout",
        "chaos/Pod/p BackOff: restarting"]
    assert event_time(events[3]) == event_time(event("x", "", lastTimestamp="2026-12-06T10:00:20Z"))


def test_the_earlier_release_operators_warnings_are_shown_apart_and_not_judged() -> None:
    """0.1.0's operator, leading until this checkout's takes the Lease, names no
    reportingInstance; this checkout's names its process on every event, so its own
    warnings are judged like any other component's."""
    since = event_time(event("x", "", lastTimestamp="2026-12-06T10:00:10Z"))
    earlier = event("AutoscalingFailed", "autoscaling pool slow: took longer than 0.5 s",
                    lastTimestamp="2026-12-06T10:00:12Z",
                    source={"component": "metamapper-operator"},
                    reportingComponent="metamapper-operator")
    ours = {**earlier, "reportingInstance": "metamapper-operator-6c9-abcde_0123456789ab"}
    kubelet = event("BackOff", "restarting", lastTimestamp="2026-12-06T10:00:12Z",
                    source={"component": "kubelet"})
    assert unexplained_warnings([earlier, ours, kubelet], since) == [
        "chaos/Pod/p AutoscalingFailed: autoscaling pool slow: took longer than 0.5 s",
        "chaos/Pod/p BackOff: restarting"]
    assert earlier_release_warnings([earlier, ours, kubelet], since) == [
        "chaos/Pod/p AutoscalingFailed: autoscaling pool slow: took longer than 0.5 s"]
