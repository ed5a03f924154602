"""Manifest builders: pure functions from a Fleet to the Kubernetes objects it needs.

No I/O here. Every object carries the labels the operator finds its children by, an owner
reference to the Metamapper (so deleting it garbage-collects everything), and a hash of
its own desired content (``metamapper.io/spec-hash``), which lets the reconciler tell
"nothing changed" without a request. Credentials reach pods only as ``secretKeyRef``
environment variables, never as literal values or arguments.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from metamapper_operator import crd
from metamapper_operator.model import (
    CONFIG_SUFFIX,
    FLOWER_SUFFIX,
    NETWORK_POLICY_SUFFIX,
    SCHEDULER_SUFFIX,
    Fleet,
    PodOptions,
    Pool,
    SecretKeyRef,
    child_name,
)
from metamapper_operator.pod_settings import for_pool

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
TMP_VOLUME = {"name": "tmp", "emptyDir": {}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}
# Requests a container gets for what its resources leave out (no limits by default: a CPU
# limit throttles and a memory limit kills a long inspection; set them per pool).
DEFAULT_WORKER_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
DEFAULT_SCHEDULER_REQUESTS = {"cpu": "50m", "memory": "128Mi"}
# Flower runs no task: a memory limit bounds its in-memory task history instead.
DEFAULT_FLOWER_REQUESTS = {"cpu": "50m", "memory": "128Mi"}
DEFAULT_FLOWER_LIMITS = {"memory": "512Mi"}


def digest(obj: object) -> str:
    """A short, stable hash of a JSON-able value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# --- names and labels --------------------------------------------------------------


# The model checks that these names are valid and distinct (model.child_name).


def pool_deployment_name(fleet: Fleet, pool: Pool) -> str:
    return child_name(fleet.name, pool.name)


def scheduler_deployment_name(fleet: Fleet) -> str:
    return child_name(fleet.name, SCHEDULER_SUFFIX)


def config_map_name(fleet: Fleet) -> str:
    return child_name(fleet.name, CONFIG_SUFFIX)


def flower_name(fleet: Fleet) -> str:
    """The Flower Deployment's and Service's name."""
    return child_name(fleet.name, FLOWER_SUFFIX)


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
    if fleet.scheduler.schedule_store == "Redis":
        settings.setdefault("beat_scheduler", REDIS_BEAT_SCHEDULER)
        settings.setdefault("redbeat_key_prefix", beat_key_prefix(fleet))
    return settings


def beat_key_prefix(fleet: Fleet) -> str:
    """Where the Redis beat scheduler keeps the fleet's schedule state in the lock's Redis."""
    return f"metamapper:{fleet.namespace}:{fleet.name}:beat:"


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


def _env(fleet: Fleet, pods: PodOptions | None = None) -> list[dict[str, Any]]:
    """The operator's variables, then the user's (the fleet's, or one pool's merged ones)."""
    broker = fleet.broker
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        # Metamapper's own name, and the name older images of this project read.
        _literal_or_secret("METAMAPPER_CELERY_BROKER_URL", broker.url, broker.url_secret),
        _literal_or_secret("METAMAPPER_BROKER_URL", broker.url, broker.url_secret),
        {"name": "METAMAPPER_CELERY_CONFIG_MODULE", "value": fleet.celery_config_module},
        {"name": "METAMAPPER_CELERY_SETTINGS", "valueFrom": {"configMapKeyRef": {
            "name": config_map_name(fleet), "key": SETTINGS_KEY}}},
    ]
    if fleet.result_backend_secret:
        env.append(_secret_env("METAMAPPER_CELERY_RESULT_BACKEND", fleet.result_backend_secret))
    if broker.sqs_credentials:
        env += [_secret_env("AWS_ACCESS_KEY_ID", broker.sqs_credentials.user),
                _secret_env("AWS_SECRET_ACCESS_KEY", broker.sqs_credentials.password)]
    if broker.sqs_region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": broker.sqs_region})
    return env + [dict(v) for v in (pods or fleet.pods).env]


# --- pods --------------------------------------------------------------------------


def _extra_container(pods: PodOptions, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A user's init or sidecar container; restricted like ours unless it says otherwise."""
    container = dict(raw)
    container.setdefault("securityContext", dict(pods.container_security_context
                                                 or RESTRICTED_CONTAINER_SECURITY))
    return container


def _spread(pods: PodOptions, selector: Mapping[str, str]) -> list[dict[str, Any]]:
    """Topology spread constraints; one without a labelSelector counts the same pods."""
    return [{"labelSelector": {"matchLabels": dict(selector)}, **c}
            for c in pods.topology_spread_constraints]


def _pod_spec(pods: PodOptions, container: dict[str, Any], grace: int,
              selector: Mapping[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [container, *(_extra_container(pods, c) for c in pods.sidecars)],
        "terminationGracePeriodSeconds": grace,
        "securityContext": dict(pods.pod_security_context or RESTRICTED_POD_SECURITY),
        "volumes": [TMP_VOLUME, *(dict(v) for v in pods.volumes)],
        "enableServiceLinks": False,
        # Workers and beat never call the Kubernetes API: no token unless asked for.
        "automountServiceAccountToken": pods.automount_service_account_token,
    }
    optional = {
        "serviceAccountName": pods.service_account_name,
        "priorityClassName": pods.priority_class_name,
        "nodeSelector": dict(pods.node_selector),
        "tolerations": [dict(t) for t in pods.tolerations],
        "affinity": dict(pods.affinity),
        "imagePullSecrets": [dict(s) for s in pods.image_pull_secrets],
        "topologySpreadConstraints": _spread(pods, selector),
        "initContainers": [_extra_container(pods, c) for c in pods.init_containers],
    }
    spec.update({k: v for k, v in optional.items() if v})
    return spec


def with_default_requests(resources: Mapping[str, Any], defaults: Mapping[str, str],
                          limits: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``resources`` with ``defaults`` for the requests (and ``limits`` for the limits) it
    does not name."""
    out = {**resources, "requests": {**defaults, **(resources.get("requests") or {})}}
    if limits:
        out["limits"] = {**limits, **(resources.get("limits") or {})}
    return out


def _container(fleet: Fleet, pods: PodOptions, name: str, command: list[str] | None,
               args: list[str], resources: Mapping[str, Any]) -> dict[str, Any]:
    """A container; without ``command`` it runs the image's entrypoint with ``args``."""
    container: dict[str, Any] = {
        "name": name, "image": pods.image, "imagePullPolicy": pods.image_pull_policy,
        **({"command": command} if command else {}), "args": args, "env": _env(fleet, pods),
        "securityContext": dict(pods.container_security_context
                                or RESTRICTED_CONTAINER_SECURITY),
        "volumeMounts": [TMP_MOUNT, *(dict(m) for m in pods.volume_mounts)],
        "resources": dict(resources),
    }
    if pods.env_from:
        container["envFrom"] = [dict(e) for e in pods.env_from]
    return container


def _deployment(fleet: Fleet, pods: PodOptions, name: str, component: str, pool: str | None,
                replicas: int, pod_spec: dict[str, Any], config_hash: str,
                strategy: dict[str, Any]) -> dict[str, Any]:
    template_labels = {**pods.labels, **_labels(fleet, component, pool)}
    annotations = {**pods.annotations, CONFIG_HASH: config_hash}
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


CELERY_APP = ["--app", "metamapper"]
REDIS_BEAT_SCHEDULER = "metamapper.beat:RedisScheduler"
# Gate on Standalone scheduler pods: lifted by the operator once no other scheduler pod of
# the fleet exists (not even one terminating), so two beats never run at once.
ONE_BEAT_GATE = "metamapper.io/one-beat"
# The project's image's probes (stamps in /tmp, see the README). A worker serves its two
# over HTTP (metamapper.probe_server), which costs the node far less than starting a
# process in every pod every period; the scheduler's runs metamapper-probe, every 30 s.
PROBE = "metamapper-probe"
PROBE_PORT = 9807
PROBE_PORT_NAME = "probes"
WORKER_LIVENESS: dict[str, Any] = {
    "httpGet": {"path": "/livez?max-age=60", "port": PROBE_PORT_NAME},
    "initialDelaySeconds": 20, "periodSeconds": 20, "timeoutSeconds": 10, "failureThreshold": 3}
WORKER_READINESS: dict[str, Any] = {
    "httpGet": {"path": "/readyz", "port": PROBE_PORT_NAME},
    "initialDelaySeconds": 2, "periodSeconds": 5, "timeoutSeconds": 10, "failureThreshold": 2}
SCHEDULER_LIVENESS: dict[str, Any] = {
    "exec": {"command": [PROBE, "beat-live", "--max-age", "120"]},
    "initialDelaySeconds": 20, "periodSeconds": 30, "timeoutSeconds": 10, "failureThreshold": 3}


def _probe(enabled: bool, override: Mapping[str, Any], default: Mapping[str, Any]
           ) -> dict[str, Any] | None:
    if override:
        return dict(override)
    return dict(default) if enabled else None


def _with_probes(container: dict[str, Any], **probes: dict[str, Any] | None
                 ) -> dict[str, Any]:
    container.update({name: probe for name, probe in probes.items() if probe})
    return container


def _process(fleet: Fleet, program: str, args: list[str]) -> tuple[list[str] | None, list[str]]:
    """(command, args) of a Celery program in the fleet's command style.

    Celery: ``celery --app metamapper PROGRAM ARGS``. Entrypoint: the image's entrypoint
    with ``PROGRAM ARGS`` (upstream's adds ``--app metamapper`` and the log level).
    """
    if fleet.command_style == "Entrypoint":
        entry = {"beat": "scheduler"}.get(program, program)
        return None, [entry, *args]
    return ["celery"], [*CELERY_APP, program, "--loglevel", "INFO", *args]


def worker_args(fleet: Fleet, pool: Pool) -> list[str]:
    """``celery worker``'s own arguments for a pool; the hostname is unique per pod and
    names the pool. Without mingle a pod consumes a second sooner after it starts (mingle
    waits that long for the other workers' replies); without gossip a pool of N workers
    does not have each of them consume the events of all the others."""
    return ["--queues", ",".join(pool.queues), "--concurrency", str(pool.concurrency),
            "--hostname", f"{pool.name}@$(POD_NAME)",
            *([] if pool.mingle else ["--without-mingle"]),
            *([] if pool.gossip else ["--without-gossip"]), *pool.extra_args]


# Task metrics of each worker pod (metamapper.metrics in the worker image), served on
# this port (celery-exporter's) as the sum over the pool's processes, whose files live on
# the pod's writable /tmp (the root filesystem is read-only).
METRICS_PORT = 9808
METRICS_PORT_NAME = "metrics"
WORKER_PORTS_ENV: list[dict[str, Any]] = [
    {"name": "METAMAPPER_METRICS_PORT", "value": str(METRICS_PORT)},
    {"name": "PROMETHEUS_MULTIPROC_DIR", "value": "/tmp/metrics"},
    {"name": "METAMAPPER_PROBE_PORT", "value": str(PROBE_PORT)},
]


def worker_deployment(fleet: Fleet, pool: Pool, replicas: int, config_hash: str
                      ) -> dict[str, Any]:
    pods = for_pool(fleet.pods, pool.pods)
    command, args = _process(fleet, "worker", worker_args(fleet, pool))
    probes = fleet.probes
    container = _with_probes(
        _container(fleet, pods, "worker", command, args,
                   with_default_requests(pool.resources, DEFAULT_WORKER_REQUESTS)),
        livenessProbe=_probe(probes.enabled, probes.worker_liveness, WORKER_LIVENESS),
        readinessProbe=_probe(probes.enabled, probes.worker_readiness, WORKER_READINESS))
    container["env"] = container["env"] + WORKER_PORTS_ENV
    container["ports"] = [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT,
                           "protocol": "TCP"},
                          {"name": PROBE_PORT_NAME, "containerPort": PROBE_PORT,
                           "protocol": "TCP"}]
    pod_spec = _pod_spec(pods, container, pool.termination_grace_period_seconds,
                         selector_labels(fleet, "worker", pool.name))
    # New pods come up before old ones are asked to stop; old ones get their full grace.
    strategy = {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}
    return _deployment(fleet, pods, pool_deployment_name(fleet, pool), "worker", pool.name,
                       replicas, pod_spec, config_hash, strategy)


def _needs_redis(fleet: Fleet) -> bool:
    scheduler = fleet.scheduler
    return not scheduler.standalone or scheduler.schedule_store == "Redis"


class Part(enum.StrEnum):
    """An optional part of a fleet, which a missing Secret holds back alone."""

    SCHEDULER = "scheduler"
    FLOWER = "Flower"
    RESULT_BACKEND = "result backend"


@dataclass(frozen=True, slots=True)
class Held:
    """A part left out of the desired objects until the Secret it needs exists; the
    message names the field and the Secret (never a value), and what runs meanwhile."""

    part: Part
    message: str


def scheduler_held(fleet: Fleet, transport: str) -> str | None:
    """Why the scheduler cannot run (its lock or schedule store has no Redis), or None.

    Only the scheduler waits for a lock Redis; the worker pools run without one.
    """
    lock = fleet.scheduler.lock
    if (not fleet.scheduler.enabled or not _needs_redis(fleet) or transport == "redis"
            or lock.redis_url or lock.redis_url_secret):
        return None
    needs = ("Redis schedule store" if fleet.scheduler.standalone
             else "single-beat lock")
    return (f"spec.scheduler.lock.redisURL: the scheduler's {needs} needs Redis; "
            f"the broker is {transport}: set redisURL or redisURLSecretRef (or use mode "
            "Standalone with scheduleStore File). "
            "The scheduler is held back; the worker pools run")


def _lock_redis(fleet: Fleet, transport: str, name: str) -> dict[str, Any]:
    """The env var ``name`` holding the lock's Redis URL; a Redis broker by default."""
    lock, broker = fleet.scheduler.lock, fleet.broker
    if lock.redis_url or lock.redis_url_secret:
        return _literal_or_secret(name, lock.redis_url, lock.redis_url_secret)
    if transport == "redis":
        return _literal_or_secret(name, broker.url, broker.url_secret)
    raise ValueError("a non-Redis broker needs scheduler.lock.redisURL")


def scheduler_env(fleet: Fleet, transport: str) -> list[dict[str, Any]]:
    """single-beat's settings and the Redis schedule store's URL, as the spec needs them."""
    scheduler = fleet.scheduler
    env = [] if scheduler.standalone else single_beat_env(fleet, transport)
    if scheduler.schedule_store == "Redis":
        env.append(_lock_redis(fleet, transport, "METAMAPPER_BEAT_REDIS_URL"))
    return env


def single_beat_env(fleet: Fleet, transport: str) -> list[dict[str, Any]]:
    lock = fleet.scheduler.lock
    return [
        _lock_redis(fleet, transport, "SINGLE_BEAT_REDIS_SERVER"),
        {"name": "SINGLE_BEAT_IDENTIFIER", "value": f"metamapper:{fleet.namespace}:{fleet.name}"},
        {"name": "SINGLE_BEAT_LOCK_TIME", "value": str(lock.lock_time_seconds)},
        {"name": "SINGLE_BEAT_INITIAL_LOCK_TIME", "value": str(2 * lock.lock_time_seconds)},
        {"name": "SINGLE_BEAT_HEARTBEAT_INTERVAL", "value": str(lock.heartbeat_interval_seconds)},
        {"name": "SINGLE_BEAT_HOST_IDENTIFIER", "value": "$(POD_NAME)"},
    ]


def scheduler_command(fleet: Fleet) -> tuple[list[str] | None, list[str]]:
    """Beat, under single-beat unless the mode is Standalone."""
    beat_args = ["--schedule", SCHEDULE_FILE]
    if fleet.scheduler.standalone:
        return _process(fleet, "beat", beat_args)
    beat = ["celery", *CELERY_APP, "beat", "--loglevel", "INFO", *beat_args]
    if fleet.command_style == "Entrypoint":
        return None, ["single-beat", *beat]   # through the entrypoint's pass-through
    return ["single-beat"], beat


def scheduler_deployment(fleet: Fleet, transport: str, config_hash: str) -> dict[str, Any]:
    scheduler = fleet.scheduler
    command, args = scheduler_command(fleet)
    probes = fleet.probes
    container = _with_probes(
        _container(fleet, fleet.pods, "scheduler", command, args,
                   with_default_requests(scheduler.resources, DEFAULT_SCHEDULER_REQUESTS)),
        livenessProbe=_probe(probes.enabled, probes.scheduler_liveness, SCHEDULER_LIVENESS))
    container["env"] = container["env"] + scheduler_env(fleet, transport)
    pod_spec = _pod_spec(fleet.pods, container, 30, selector_labels(fleet, "scheduler"))
    if scheduler.standalone:
        pod_spec["schedulingGates"] = [{"name": ONE_BEAT_GATE}]
    replicas = 0 if fleet.suspend else scheduler.replicas
    # Recreate: never run an old and a new scheduler generation side by side.
    return _deployment(fleet, fleet.pods, scheduler_deployment_name(fleet), "scheduler", None,
                       replicas, pod_spec, config_hash, {"type": "Recreate"})


def pod_disruption_budget(fleet: Fleet, pool: Pool) -> dict[str, Any]:
    """The pool's PodDisruptionBudget, named like its Deployment."""
    return _stamp({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _metadata(fleet, pool_deployment_name(fleet, pool), "worker", pool.name),
        "spec": {"maxUnavailable": pool.disruption.max_unavailable,
                 "selector": {"matchLabels": selector_labels(fleet, "worker", pool.name)}},
    })


def network_policy_name(fleet: Fleet) -> str:
    return child_name(fleet.name, NETWORK_POLICY_SUFFIX)


# Name resolution through any cluster DNS service.
DNS_EGRESS = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def network_policy(fleet: Fleet) -> dict[str, Any]:
    """Ingress only as listed, egress to DNS and the listed peers, for every fleet pod."""
    policy = fleet.network_policy
    return _stamp({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": _metadata(fleet, network_policy_name(fleet), "network"),
        "spec": {
            "podSelector": {"matchLabels": {LABEL_NAME: "metamapper",
                                            LABEL_INSTANCE: fleet.name}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [dict(rule) for rule in policy.ingress],
            "egress": [DNS_EGRESS, *(dict(rule) for rule in policy.egress)],
        },
    })


FLOWER_PORT = 5555


def flower_deployment(fleet: Fleet, config_hash: str) -> dict[str, Any]:
    """Flower for the fleet's broker: the URL reaches it as env (from the Secret when the
    spec names one), basic auth from a Secret (``FLOWER_BASIC_AUTH``)."""
    flower = fleet.flower
    port = f"--port={FLOWER_PORT}"
    command, args = (None, ["flower", port]) if fleet.command_style == "Entrypoint" else (
        ["celery"], [*CELERY_APP, "flower", port])
    container = _container(fleet, fleet.pods, "flower", command, args, with_default_requests(
        flower.resources, DEFAULT_FLOWER_REQUESTS, DEFAULT_FLOWER_LIMITS))
    if flower.basic_auth_secret is not None:
        container["env"].append(_secret_env("FLOWER_BASIC_AUTH", flower.basic_auth_secret))
    container["ports"] = [{"name": "http", "containerPort": FLOWER_PORT}]
    health = {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 10,
              "timeoutSeconds": 5}
    container["readinessProbe"] = health
    container["livenessProbe"] = {**health, "initialDelaySeconds": 20, "failureThreshold": 3}
    pod_spec = _pod_spec(fleet.pods, container, 30, selector_labels(fleet, "flower"))
    return _deployment(fleet, fleet.pods, flower_name(fleet), "flower", None,
                       0 if fleet.suspend else 1,
                       pod_spec, config_hash, {"type": "Recreate"})


def flower_service(fleet: Fleet) -> dict[str, Any]:
    return _stamp({
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(fleet, flower_name(fleet), "flower"),
        "spec": {"type": "ClusterIP", "selector": selector_labels(fleet, "flower"),
                 "ports": [{"name": "http", "port": FLOWER_PORT, "targetPort": "http"}]},
    })


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


def desired_objects(fleet: Fleet, transport: str, current_replicas: Mapping[str, int],
                    held: Collection[Held] = ()) -> list[dict[str, Any]]:
    """Every child object the fleet needs; ``current_replicas`` by Deployment name. The
    ``held`` parts are left out: Flower and the scheduler are not deployed, the pods run
    without the result backend; the worker pools run."""
    parts = {h.part for h in held}
    if Part.RESULT_BACKEND in parts:
        fleet = replace(fleet, result_backend_secret=None)
    cm = config_map(fleet)
    config_hash = digest({"data": cm["data"], "env": _env(fleet),
                          "module": fleet.celery_config_module})
    objects = [cm]
    for pool in fleet.pools:
        name = pool_deployment_name(fleet, pool)
        replicas = initial_replicas(fleet, pool, current_replicas.get(name))
        objects.append(worker_deployment(fleet, pool, replicas, config_hash))
        if pool.disruption.enabled:
            objects.append(pod_disruption_budget(fleet, pool))
    if (fleet.scheduler.enabled and scheduler_held(fleet, transport) is None
            and Part.SCHEDULER not in parts):
        objects.append(scheduler_deployment(fleet, transport, config_hash))
    if fleet.flower.enabled and Part.FLOWER not in parts:
        objects += [flower_deployment(fleet, config_hash), flower_service(fleet)]
    if fleet.network_policy.enabled:
        objects.append(network_policy(fleet))
    return objects
