"""Per-pool pod settings: the merge rules, field by field, and the pods they build."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from metamapper_operator.builders import (
    DEFAULT_SCHEDULER_REQUESTS,
    DEFAULT_WORKER_REQUESTS,
    desired_objects,
)
from metamapper_operator.model import PodOptions, PodSettings, SpecError, parse
from metamapper_operator.pod_settings import for_pool, merge_by

FLEET = PodOptions(
    image="worker:1",
    env=({"name": "A", "value": "fleet"}, {"name": "B", "value": "fleet"}),
    env_from=({"configMapRef": {"name": "common"}},),
    labels={"team": "data", "tier": "fleet"},
    annotations={"a": "fleet"},
    service_account_name="fleet-sa",
    node_selector={"pool": "general", "arch": "amd64"},
    tolerations=({"key": "spot", "operator": "Exists"},),
    affinity={"nodeAffinity": {"n": "fleet"}, "podAntiAffinity": {"p": "fleet"}},
    priority_class_name="normal",
    topology_spread_constraints=({"maxSkew": 1, "topologyKey": "zone",
                                  "whenUnsatisfiable": "ScheduleAnyway"},),
    volumes=({"name": "certs", "secret": {"secretName": "ca"}},),
    volume_mounts=({"name": "certs", "mountPath": "/certs"},),
    init_containers=({"name": "wait", "image": "busybox:1"},),
    sidecars=({"name": "logs", "image": "fluent-bit:3"},),
)

# (field of the merged PodOptions, the pool's settings, expected value)
MERGES: list[tuple[str, PodSettings, Any]] = [
    ("image", PodSettings(), "worker:1"),
    ("image", PodSettings(image="worker:2"), "worker:2"),
    ("env", PodSettings(env=({"name": "B", "value": "pool"}, {"name": "C", "value": "pool"})),
     ({"name": "A", "value": "fleet"}, {"name": "B", "value": "pool"},
      {"name": "C", "value": "pool"})),
    ("env_from", PodSettings(env_from=({"secretRef": {"name": "revisioner"}},)),
     ({"configMapRef": {"name": "common"}}, {"secretRef": {"name": "revisioner"}})),
    ("labels", PodSettings(labels={"tier": "pool", "x": "1"}),
     {"team": "data", "tier": "pool", "x": "1"}),
    ("annotations", PodSettings(annotations={"b": "pool"}), {"a": "fleet", "b": "pool"}),
    ("service_account_name", PodSettings(), "fleet-sa"),
    ("service_account_name", PodSettings(service_account_name="pool-sa"), "pool-sa"),
    ("automount_service_account_token", PodSettings(), False),
    ("automount_service_account_token", PodSettings(automount_service_account_token=True),
     True),
    ("node_selector", PodSettings(node_selector={"pool": "highmem"}),
     {"pool": "highmem", "arch": "amd64"}),
    ("tolerations", PodSettings(tolerations=({"key": "spot", "operator": "Exists"},
                                             {"key": "highmem", "operator": "Exists"})),
     ({"key": "spot", "operator": "Exists"}, {"key": "highmem", "operator": "Exists"})),
    ("affinity", PodSettings(affinity={"nodeAffinity": {"n": "pool"}}),
     {"nodeAffinity": {"n": "pool"}, "podAntiAffinity": {"p": "fleet"}}),
    ("priority_class_name", PodSettings(priority_class_name="batch"), "batch"),
    ("topology_spread_constraints", PodSettings(), FLEET.topology_spread_constraints),
    ("topology_spread_constraints", PodSettings(topology_spread_constraints=()), ()),
    ("volumes", PodSettings(volumes=({"name": "certs", "configMap": {"name": "x"}},
                                     {"name": "scratch", "emptyDir": {}})),
     ({"name": "certs", "configMap": {"name": "x"}}, {"name": "scratch", "emptyDir": {}})),
    ("volume_mounts", PodSettings(volume_mounts=(
        {"name": "scratch", "mountPath": "/certs"}, {"name": "scratch", "mountPath": "/s"})),
     ({"name": "scratch", "mountPath": "/certs"}, {"name": "scratch", "mountPath": "/s"})),
    ("init_containers", PodSettings(init_containers=({"name": "migrate", "image": "m:1"},)),
     ({"name": "wait", "image": "busybox:1"}, {"name": "migrate", "image": "m:1"})),
    ("sidecars", PodSettings(sidecars=({"name": "logs", "image": "vector:0"},)),
     ({"name": "logs", "image": "vector:0"},)),
]


@pytest.mark.parametrize(("field", "pool", "expected"), MERGES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(MERGES)])
def test_a_pool_setting_merges_over_the_fleets(field: str, pool: PodSettings,
                                               expected: Any) -> None:
    assert getattr(for_pool(FLEET, pool), field) == expected


def test_merge_by_keeps_the_fleets_order_and_appends_the_pools_new_entries() -> None:
    assert merge_by("k", [{"k": 1}, {"k": 2, "v": "a"}], [{"k": 3}, {"k": 2, "v": "b"}]) == (
        {"k": 1}, {"k": 2, "v": "b"}, {"k": 3})


BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "mm", "uid": "u-1", "generation": 1},
    "spec": {
        "image": "worker:1",
        "broker": {"url": "redis://redis:6379/0"},
        "env": [{"name": "LOG_LEVEL", "value": "info"}],
        "podLabels": {"team": "data"},
        "nodeSelector": {"pool": "general"},
        "volumes": [{"name": "ca", "secret": {"secretName": "ca"}}],
        "volumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                       "whenUnsatisfiable": "ScheduleAnyway"}],
        "pools": [
            {"name": "default", "queues": ["default"]},
            {"name": "revisioner", "queues": ["revisioner"], "image": "worker:2",
             "env": [{"name": "LOG_LEVEL", "value": "debug"}],
             "nodeSelector": {"pool": "highmem"}, "podLabels": {"cost": "batch"},
             "sidecars": [{"name": "proxy", "image": "proxy:1"}],
             "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "4Gi"}}},
        ],
    },
}


def _pods(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    built = desired_objects(parse(raw), "redis", {})
    return {o["metadata"]["name"]: o["spec"]["template"] for o in built
            if o["kind"] == "Deployment"}


def test_each_pool_gets_its_merged_settings_and_the_scheduler_the_fleets() -> None:
    pods = _pods(BODY)
    default, revisioner = pods["mm-default"], pods["mm-revisioner"]
    scheduler = pods["mm-scheduler"]
    worker = revisioner["spec"]["containers"][0]
    assert worker["image"] == "worker:2"
    assert default["spec"]["containers"][0]["image"] == "worker:1"
    assert {e["name"]: e.get("value") for e in worker["env"]}["LOG_LEVEL"] == "debug"
    assert [e["name"] for e in worker["env"]].count("LOG_LEVEL") == 1
    assert revisioner["spec"]["nodeSelector"] == {"pool": "highmem"}
    assert revisioner["metadata"]["labels"]["cost"] == "batch"
    assert revisioner["metadata"]["labels"]["team"] == "data"
    assert [c["name"] for c in revisioner["spec"]["containers"]] == ["worker", "proxy"]
    # A user's container without a securityContext gets the restricted one.
    assert revisioner["spec"]["containers"][1]["securityContext"]["runAsNonRoot"] is True
    assert [c["name"] for c in default["spec"]["containers"]] == ["worker"]
    assert scheduler["spec"]["nodeSelector"] == {"pool": "general"}
    assert scheduler["spec"]["containers"][0]["image"] == "worker:1"
    for template in pods.values():
        spec = template["spec"]
        assert [v["name"] for v in spec["volumes"]] == ["tmp", "ca"]
        assert spec["containers"][0]["volumeMounts"][1] == {
            "name": "ca", "mountPath": "/etc/ca", "readOnly": True}
        assert spec["automountServiceAccountToken"] is False
    # A spread constraint without a selector counts the pods of its own pool.
    [spread] = revisioner["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"]["metamapper.io/pool"] == "revisioner"
    assert "metamapper.io/pool" not in (
        scheduler["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"])


def test_default_requests_fill_what_resources_leave_out() -> None:
    pods = _pods(BODY)
    assert pods["mm-default"]["spec"]["containers"][0]["resources"] == {
        "requests": DEFAULT_WORKER_REQUESTS}
    assert pods["mm-revisioner"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": DEFAULT_WORKER_REQUESTS["cpu"], "memory": "2Gi"},
        "limits": {"memory": "4Gi"}}
    assert pods["mm-scheduler"]["spec"]["containers"][0]["resources"] == {
        "requests": DEFAULT_SCHEDULER_REQUESTS}


def test_a_token_is_mounted_only_where_asked_for() -> None:
    raw = copy.deepcopy(BODY)
    raw["spec"]["pools"][1]["automountServiceAccountToken"] = True
    pods = _pods(raw)
    assert pods["mm-revisioner"]["spec"]["automountServiceAccountToken"] is True
    assert pods["mm-default"]["spec"]["automountServiceAccountToken"] is False
    raw["spec"]["automountServiceAccountToken"] = True
    assert _pods(raw)["mm-scheduler"]["spec"]["automountServiceAccountToken"] is True


@pytest.mark.parametrize(("pool", "field"), [
    ({"env": [{"name": "METAMAPPER_BROKER_URL", "value": "redis://x"}]},
     "spec.pools[0].env[0].name"),
    ({"image": " worker:1"}, "spec.pools[0].image"),
])
def test_pool_settings_the_model_refuses(pool: dict[str, Any], field: str) -> None:
    raw = copy.deepcopy(BODY)
    raw["spec"]["pools"][0].update(pool)
    with pytest.raises(SpecError) as err:
        parse(raw)
    assert err.value.field == field
