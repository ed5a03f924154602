"""Reconciling Metamapper objects against the real apiserver and controller-manager."""

from __future__ import annotations

import time

from devenv.waiting import wait_until
from metamapper_operator import crd
from tests.conftest import Cluster
from tests.operator.conftest import RESYNC_SECONDS, OperatorProcess, operator_writes
from tests.operator.fleet import (
    BROKER_PASSWORD,
    apply,
    broker_secret,
    condition,
    fleet,
    get,
    wait_for_children,
)

CHILDREN = {"mm-default", "mm-revisioner", "mm-scheduler"}


def test_create_makes_pools_scheduler_and_config(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    deps = wait_for_children(cluster, namespace, CHILDREN)
    owner = get(cluster, namespace, "metamapper", "mm")
    assert owner is not None

    default = deps["mm-default"]
    assert default["spec"]["replicas"] == 1
    assert default["metadata"]["ownerReferences"] == [{
        "apiVersion": crd.API_VERSION, "kind": crd.KIND, "name": "mm",
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    pod = default["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "metamapper-worker:0.1.0"
    assert container["command"] == ["celery"]
    assert container["args"] == ["--app", "metamapper", "worker", "--loglevel", "INFO",
                                 "--queues", "default,checks", "--concurrency", "3",
                                 "--hostname", "default@$(POD_NAME)", "--without-mingle",
                                 "--without-gossip"]
    env = {e["name"]: e for e in container["env"]}
    assert env["METAMAPPER_BROKER_URL"] == {"name": "METAMAPPER_BROKER_URL", "valueFrom": {
        "secretKeyRef": {"name": "broker", "key": "url"}}}
    assert env["METAMAPPER_CELERY_CONFIG_MODULE"]["value"] == "metamapper.celeryconfig"
    assert BROKER_PASSWORD not in str(deps)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    revisioner = deps["mm-revisioner"]
    assert revisioner["spec"]["replicas"] == 0  # minReplicas 0: the autoscaler wakes it
    assert revisioner["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 900

    scheduler = deps["mm-scheduler"]
    assert scheduler["spec"]["replicas"] == 2
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
    [beat] = scheduler["spec"]["template"]["spec"]["containers"]
    assert beat["command"] == ["single-beat"]
    assert beat["args"][:4] == ["celery", "--app", "metamapper", "beat"]
    beat_env = {e["name"]: e for e in beat["env"]}
    assert beat_env["SINGLE_BEAT_REDIS_SERVER"]["valueFrom"]["secretKeyRef"]["name"] == "broker"
    assert beat_env["SINGLE_BEAT_LOCK_TIME"]["value"] == "5"

    config = get(cluster, namespace, "configmap", "mm-celery")
    assert config is not None and "settings.json" in config["data"]

    def ready_status() -> dict | None:
        obj = get(cluster, namespace, "metamapper", "mm")
        status = (obj or {}).get("status") or {}
        return obj if status.get("poolCount") == 2 and "workers" in status else None

    status = wait_until(ready_status, what="status with pools")["status"]
    assert status["observedGeneration"] == owner["metadata"]["generation"]
    assert status["transport"] == "redis"
    assert [p["name"] for p in status["pools"]] == ["default", "revisioner"]
    assert status["pools"][0]["queues"] == ["default", "checks"]
    assert condition({"status": status}, "InvalidSpec")["status"] == "False"
    # No kubelet here: pods stay Pending, so the fleet is progressing, not ready.
    assert condition({"status": status}, "Ready")["status"] == "False"
    events = cluster.kubectl("get", "events", "-n", namespace,
                             "--field-selector", "involvedObject.kind=Metamapper").stdout
    assert "Deployment mm-default created" in events


def test_update_of_one_pool_changes_only_its_deployment(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    before = wait_for_children(cluster, namespace, CHILDREN)
    changed = fleet()
    changed["spec"]["pools"][0]["concurrency"] = 8
    apply(cluster, namespace, changed)

    def updated() -> dict | None:
        dep = get(cluster, namespace, "deployment", "mm-default")
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"] if dep else []
        return dep if "8" in args else None

    wait_until(updated, what="the default pool's concurrency to become 8")
    time.sleep(RESYNC_SECONDS)
    for name in ("mm-revisioner", "mm-scheduler"):
        after = get(cluster, namespace, "deployment", name)
        assert after is not None
        assert after["metadata"]["generation"] == before[name]["metadata"]["generation"], name


def test_removing_a_pool_deletes_its_deployment(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    wait_for_children(cluster, namespace, CHILDREN)
    cluster.kubectl("patch", "-n", namespace, "metamapper", "mm", "--type=json",
                    "-p", '[{"op": "remove", "path": "/spec/pools/1"}]')
    wait_for_children(cluster, namespace, {"mm-default", "mm-scheduler"})


def test_config_change_rolls_pods_via_the_template_checksum(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    deps = wait_for_children(cluster, namespace, CHILDREN)

    def config_hash(dep: dict) -> str:
        return str(dep["spec"]["template"]["metadata"]["annotations"]["metamapper.io/config-hash"])

    first = config_hash(deps["mm-default"])
    apply(cluster, namespace, fleet(celery={"settings": {"task_soft_time_limit": 600}}))

    def rolled() -> str | None:
        dep = get(cluster, namespace, "deployment", "mm-default")
        value = config_hash(dep) if dep else first
        return value if value != first else None

    wait_until(rolled, what="the config hash on the pod template to change")
    cm = get(cluster, namespace, "configmap", "mm-celery")
    assert cm is not None and '"task_soft_time_limit": 600' in cm["data"]["settings.json"]


def test_deleting_the_metamapper_garbage_collects_its_children(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    wait_for_children(cluster, namespace, CHILDREN)
    cluster.kubectl("delete", "-n", namespace, "metamapper", "mm")
    wait_for_children(cluster, namespace, set(), timeout=60)
    wait_until(lambda: get(cluster, namespace, "configmap", "mm-celery") is None,
               what="the ConfigMap to be collected")


def test_steady_state_makes_no_writes(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    wait_for_children(cluster, namespace, CHILDREN)
    # Let creation settle: status catches up with the children, events are posted.
    wait_until(lambda: (get(cluster, namespace, "metamapper", "mm") or {}).get("status", {})
               .get("workers") is not None, what="status")
    time.sleep(2 * RESYNC_SECONDS)
    settled = len(operator_writes(cluster, namespace))
    assert settled > 0  # the audit log does see the operator's writes
    time.sleep(3 * RESYNC_SECONDS + 1)  # three full resyncs of every object
    assert operator_writes(cluster, namespace)[settled:] == []


def test_drift_is_repaired_on_resync(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    wait_for_children(cluster, namespace, CHILDREN)
    cluster.kubectl("delete", "-n", namespace, "deployment", "mm-scheduler")
    wait_for_children(cluster, namespace, CHILDREN, timeout=4 * RESYNC_SECONDS + 10)


def test_a_kubectl_edit_of_a_childs_template_is_repaired_once(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """The content-hash annotation does not change on a kubectl edit; the managed fields
    show that another manager took the image. Once repaired, the operator is at rest."""
    apply(cluster, namespace, broker_secret(), fleet())
    wait_for_children(cluster, namespace, CHILDREN)

    def image() -> str:
        dep = get(cluster, namespace, "deployment", "mm-default") or {}
        return str(dep["spec"]["template"]["spec"]["containers"][0]["image"])

    def repaired() -> list[str]:
        return cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                               "reason=Repaired", "-o", "name").stdout.split()

    wanted = image()
    # Not read back: a resync (every 2 s) may repair it before a read here; the Repaired
    # event is what shows the operator saw another manager's image.
    cluster.kubectl("set", "image", "-n", namespace, "deployment/mm-default", "worker=evil:1")
    wait_until(lambda: repaired() and image() == wanted, timeout=4 * RESYNC_SECONDS + 10,
               what="the image put back")
    assert len(repaired()) == 1
    time.sleep(RESYNC_SECONDS)
    settled = len(operator_writes(cluster, namespace))
    time.sleep(2 * RESYNC_SECONDS + 1)
    assert operator_writes(cluster, namespace)[settled:] == []


def test_suspend_scales_everything_to_zero(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), fleet())
    wait_for_children(cluster, namespace, CHILDREN)
    apply(cluster, namespace, fleet(suspend=True))

    def all_zero() -> bool:
        deps = wait_for_children(cluster, namespace, CHILDREN)
        return all(d["spec"]["replicas"] == 0 for d in deps.values())

    wait_until(all_zero, what="every Deployment at zero")
    wait_until(lambda: condition(get(cluster, namespace, "metamapper", "mm"), "Ready")
               .get("reason") == "Suspended", what="Ready=False/Suspended")
