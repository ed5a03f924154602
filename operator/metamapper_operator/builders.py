"""Manifest builders: pure functions from a Fleet to the Kubernetes objects it needs.

No I/O here. Every object carries the labels the operator finds its children by, an owner
reference to the Metamapper (so deleting it garbage-collects everything), and a hash of
its own desired content (``metamapper.io/spec-hash``), which lets the reconciler tell
"nothing changed" without a request. Credentials reach pods only as ``secretKeyRef``
environment variables, never as literal values or arguments.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from metamapper_operator import crd
from metamapper_operator.model import Fleet, Pool, SecretKeyRef

MANAGER = "metamapper-operator"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_POOL = f"{crd.GROUP}/pool"
SPEC_HASH = f"{crd.GROUP}/spec-hash"
CONFIG_HASH = f"{crd.GROUP}/config-hash"
MANAGED_SELECTOR = {LABEL_MANAGED_BY: MANAGER}

SETTINGS_KEY = "settings.json"
WORKER_UID = 10001
SCHEDULE_FILE = "/tmp/celerybeat-schedule"

RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": WORKER_UID, "runAsGroup": WORKER_UID,
    "fsGroup": WORKER_UID, "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
}


def digest(obj: object) -> str:
    """A short, stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# --- names and labels --------------------------------------------------------------


def pool_deployment_name(fleet: Fleet, pool: Pool) -> str:
    return f"{fleet.name}-{pool.name}"


def scheduler_deployment_name(fleet: Fleet) -> str:
    return f"{fleet.name}-scheduler"


def config_map_name(fleet: Fleet) -> str:
    return f"{fleet.name}-celery"


def selector_labels(fleet: Fleet, component: str, pool: str | None = None) -> dict[str, str]:
    labels = {LABEL_NAME: "metamapper", LABEL_INSTANCE: fleet.name, LABEL_COMPONENT: component}
    if pool:
        labels[LABEL_POOL] = pool
    return labels


def _labels(fleet: Fleet, component: str, pool: str | None = None) -> dict[str, str]:
    return {**selector_labels(fleet, component, pool), **MANAGED_SELECTOR}


def _metadata(fleet: Fleet, name: str, component: str, pool: str | None = None
              ) -> dict[str, Any]:
    return {
        "name": name, "namespace": fleet.namespace,
        "labels": _labels(fleet, component, pool),
        "ownerReferences": [{
            "apiVersion": crd.API_VERSION, "kind": crd.KIND, "name": fleet.name, "uid": fleet.uid,
            "controller": True, "blockOwnerDeletion": True,
        }],
    }


def _stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """Record the hash of the object's desired content (replicas excluded) on it."""
    spec = obj.get("spec", {})
    replicas = spec.pop("replicas", None)
    content = digest(obj)
    if replicas is not None:
        spec["replicas"] = replicas
    obj["metadata"].setdefault("annotations", {})[SPEC_HASH] = content
    return obj


# --- configuration -----------------------------------------------------------------


def celery_settings(fleet: Fleet) -> dict[str, Any]:
    """The Celery settings every pod loads: the user's, plus what the broker spec implies."""
    settings = dict(fleet.celery_settings)
    transport_options = dict(settings.get("broker_transport_options") or {})
    broker = fleet.broker
    if broker.redis_key_prefix:
        transport_options["global_keyprefix"] = broker.redis_key_prefix
    if broker.sqs_region:
        transport_options["region"] = broker.sqs_region
    if broker.sqs_queue_name_prefix:
        transport_options["queue_name_prefix"] = broker.sqs_queue_name_prefix
    if transport_options:
        settings["broker_transport_options"] = transport_options
    return settings


def config_map(fleet: Fleet) -> dict[str, Any]:
    data = {SETTINGS_KEY: json.dumps(celery_settings(fleet), sort_keys=True, indent=2)}
    return _stamp({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _metadata(fleet, config_map_name(fleet), "config"),
        "data": data,
    })


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _literal_or_secret(name: str, url: str | None, ref: SecretKeyRef | None
                       ) -> dict[str, Any]:
    if ref is not None:
        return _secret_env(name, ref)
    return {"name": name, "value": url or ""}


def _env(fleet: Fleet) -> list[dict[str, Any]]:
    broker = fleet.broker
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        _literal_or_secret("METAMAPPER_BROKER_URL", broker.url, broker.url_secret),
        {"name": "METAMAPPER_CELERY_CONFIG_MODULE", "value": fleet.celery_config_module},
        {"name": "METAMAPPER_CELERY_SETTINGS", "valueFrom": {"configMapKeyRef": {
            "name": config_map_name(fleet), "key": SETTINGS_KEY}}},
    ]
    if broker.sqs_credentials:
        env += [_secret_env("AWS_ACCESS_KEY_ID", broker.sqs_credentials.user),
                _secret_env("AWS_SECRET_ACCESS_KEY", broker.sqs_credentials.password)]
    if broker.sqs_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": broker.sqs_region})
    return env + [dict(v) for v in fleet.pods.env]


# --- pods --------------------------------------------------------------------------


def _pod_spec(fleet: Fleet, container: dict[str, Any], grace: int,
              volumes: list[dict[str, Any]]) -> dict[str, Any]:
    pods = fleet.pods
    spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": grace,
        "securityContext": dict(pods.pod_security_context or RESTRICTED_POD_SECURITY),
        "volumes": volumes,
        "enableServiceLinks": False,
    }
    optional = {
        "serviceAccountName": pods.service_account_name,
        "priorityClassName": pods.priority_class_name,
        "nodeSelector": dict(pods.node_selector),
        "tolerations": [dict(t) for t in pods.tolerations],
        "affinity": dict(pods.affinity),
        "imagePullSecrets": [dict(s) for s in pods.image_pull_secrets],
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


def _container(fleet: Fleet, name: str, command: list[str], args: list[str],
               resources: Mapping[str, Any], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    pods = fleet.pods
    container: dict[str, Any] = {
        "name": name, "image": pods.image, "imagePullPolicy": pods.image_pull_policy,
        "command": command, "args": args, "env": _env(fleet),
        "securityContext": dict(pods.container_security_context
                                or RESTRICTED_CONTAINER_SECURITY),
        "volumeMounts": mounts,
    }
    if pods.env_from:
        container["envFrom"] = [dict(e) for e in pods.env_from]
    if resources:
        container["resources"] = dict(resources)
    return container


def _deployment(fleet: Fleet, name: str, component: str, pool: str | None,
                replicas: int, pod_spec: dict[str, Any], config_hash: str,
                strategy: dict[str, Any]) -> dict[str, Any]:
    template_labels = {**fleet.pods.labels, **_labels(fleet, component, pool)}
    annotations = {**fleet.pods.annotations, CONFIG_HASH: config_hash}
    return _stamp({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _metadata(fleet, name, component, pool),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(fleet, component, pool)},
            "strategy": strategy,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": template_labels, "annotations": annotations},
                "spec": pod_spec,
            },
        },
    })


TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def worker_args(fleet: Fleet, pool: Pool) -> list[str]:
    """``celery worker`` for a pool; the hostname is unique per pod and names the pool."""
    return ["--app", "metamapper", "worker", "--loglevel", "INFO",
            "--queues", ",".join(pool.queues), "--concurrency", str(pool.concurrency),
            "--hostname", f"{pool.name}@$(POD_NAME)", *pool.extra_args]


def worker_deployment(fleet: Fleet, pool: Pool, replicas: int, config_hash: str
                      ) -> dict[str, Any]:
    container = _container(fleet, "worker", ["celery"], worker_args(fleet, pool),
                           pool.resources, [TMP_MOUNT])
    pod_spec = _pod_spec(fleet, container, pool.termination_grace_period_seconds, [TMP_VOLUME])
    # New pods come up before old ones are asked to stop; old ones get their full grace.
    strategy = {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    return _deployment(fleet, pool_deployment_name(fleet, pool), "worker", pool.name,
                       replicas, pod_spec, config_hash, strategy)


def scheduler_held(fleet: Fleet, transport: str) -> str | None:
    """Why the scheduler cannot run (its single-beat lock has no Redis), or None.

    Only the scheduler waits for a lock Redis; the worker pools run without one.
    """
    lock = fleet.scheduler.lock
    if (not fleet.scheduler.enabled or transport == "redis" or lock.redis_url
            or lock.redis_url_secret):
        return None
    return (f"spec.scheduler.lock.redisURL: the scheduler's single-beat lock needs Redis; "
            f"the broker is {transport}: set redisURL or redisURLSecretRef. "
            "The scheduler is held back; the worker pools run")


def scheduler_env(fleet: Fleet, transport: str) -> list[dict[str, Any]]:
    """single-beat's settings; the lock's Redis defaults to a Redis broker."""
    lock, broker = fleet.scheduler.lock, fleet.broker
    if lock.redis_url or lock.redis_url_secret:
        redis = _literal_or_secret("SINGLE_BEAT_REDIS_SERVER", lock.redis_url,
                                   lock.redis_url_secret)
    elif transport == "redis":
        redis = _literal_or_secret("SINGLE_BEAT_REDIS_SERVER", broker.url, broker.url_secret)
    else:
        raise ValueError("a non-Redis broker needs scheduler.lock.redisURL")
    return [
        redis,
        {"name": "SINGLE_BEAT_IDENTIFIER", "value": f"metamapper:{fleet.namespace}:{fleet.name}"},
        {"name": "SINGLE_BEAT_LOCK_TIME", "value": str(lock.lock_time_seconds)},
        {"name": "SINGLE_BEAT_INITIAL_LOCK_TIME", "value": str(2 * lock.lock_time_seconds)},
        {"name": "SINGLE_BEAT_HEARTBEAT_INTERVAL", "value": str(lock.heartbeat_interval_seconds)},
        {"name": "SINGLE_BEAT_HOST_IDENTIFIER", "value": "$(POD_NAME)"},
    ]


def scheduler_deployment(fleet: Fleet, transport: str, config_hash: str) -> dict[str, Any]:
    scheduler = fleet.scheduler
    args = ["celery", "--app", "metamapper", "beat", "--loglevel", "INFO",
            "--schedule", SCHEDULE_FILE]
    container = _container(fleet, "scheduler", ["single-beat"], args, scheduler.resources,
                           [TMP_MOUNT])
    container["env"] = container["env"] + scheduler_env(fleet, transport)
    pod_spec = _pod_spec(fleet, container, 30, [TMP_VOLUME])
    replicas = 0 if fleet.suspend else scheduler.replicas
    # Recreate: never run an old and a new scheduler generation side by side.
    return _deployment(fleet, scheduler_deployment_name(fleet), "scheduler", None, replicas,
                       pod_spec, config_hash, {"type": "Recreate"})


def initial_replicas(fleet: Fleet, pool: Pool, current: int | None) -> int:
    """Pods a pool's Deployment should ask for now, before the autoscaler's say.

    A new pool starts at minReplicas; an existing one keeps its size, clamped into
    [min, max], so that applying configuration never undoes a scaling decision. A pause
    with pinned replicas sets every pool to that count, outside the bounds too (as KEDA's
    paused-replicas does).
    """
    if fleet.suspend:
        return 0
    if fleet.pause is not None and fleet.pause.replicas is not None:
        return fleet.pause.replicas
    if current is None or not pool.autoscaling.enabled:
        return pool.min_replicas
    return max(pool.min_replicas, min(pool.max_replicas, current))


def desired_objects(fleet: Fleet, transport: str, current_replicas: Mapping[str, int]
                    ) -> list[dict[str, Any]]:
    """Every child object the fleet needs; ``current_replicas`` by Deployment name."""
    cm = config_map(fleet)
    config_hash = digest({"data": cm["data"], "env": _env(fleet),
                          "module": fleet.celery_config_module})
    objects = [cm]
    for pool in fleet.pools:
        name = pool_deployment_name(fleet, pool)
        replicas = initial_replicas(fleet, pool, current_replicas.get(name))
        objects.append(worker_deployment(fleet, pool, replicas, config_hash))
    if fleet.scheduler.enabled and scheduler_held(fleet, transport) is None:
        objects.append(scheduler_deployment(fleet, transport, config_hash))
    return objects
