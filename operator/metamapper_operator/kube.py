"""The Kubernetes API edge: every request the operator makes, in one place.

kopf watches the Metamappers (and the scheduler's pods) with its own client; the
children's watches (:mod:`watching`), the writes and the few other reads go through
``kubernetes_asyncio``, because the operator runs on one
asyncio loop (kopf's) and a blocking client would stall every handler and the
autoscaler loop while a request is in flight.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from metamapper_operator import __version__, crd
from metamapper_operator.autoscale.drainplan import WorkerPod
from metamapper_operator.builders import MANAGER
from metamapper_operator.events import Correlator, EventKey, Involved, Posted

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})
# Seconds any one request may take: a stalled request must not hold an object's lock. A
# write takes at most what the guard allows (with leader election: until the Lease may pass).
REQUEST_TIMEOUT = 10.0
log = logging.getLogger(__name__)


def _api_message(err: ApiException) -> str:
    """The apiserver's own explanation (a Status object's message) when it sent one."""
    try:
        return str(json.loads(err.body or "")["message"])
    except (TypeError, ValueError, KeyError):
        return str(err.reason or "")


class KubeError(RuntimeError):
    """An API request failed; ``retryable`` says whether trying again may help."""

    def __init__(self, what: str, err: Exception) -> None:
        if isinstance(err, ApiException):
            super().__init__(f"{what}: {err.status} {_api_message(err)}".strip())
            self.status = int(err.status or 0)
        else:  # no answer in time, or no connection: status 0, worth retrying
            super().__init__(f"{what}: {type(err).__name__} {err}".strip())
            self.status = 0
        self.retryable = self.status in RETRYABLE or self.status == 0


# What a request may raise besides the apiserver's answer.
TRANSPORT_ERRORS = (TimeoutError, OSError, aiohttp.ClientError)


def _patch(call: Callable[..., Awaitable[Any]], *args: Any, content_type: str,
           timeout: float, **kwargs: Any) -> Awaitable[Any]:
    """Call a generated patch method with an explicit Content-Type.

    The client picks strategic merge for dict bodies; apply and merge patches need
    ``_content_type``, which the client accepts but its generated stubs do not list.
    """
    return call(*args, _content_type=content_type, field_manager=MANAGER,
                _request_timeout=timeout, **kwargs)


@dataclass(frozen=True)
class GatedPods:
    """Pods still held by a scheduling gate, and every other pod, oldest first."""

    gated: tuple[str, ...]
    others: tuple[str, ...]


# Pod phases after which a pod never runs again.
FINISHED = frozenset({"Succeeded", "Failed"})


def _worker_pod(pod: Any) -> WorkerPod:
    """What the ReplicaSet controller ranks a pod by (see autoscale/drainplan.py), when it
    was created and how long it took to be ready (its Ready condition's last transition
    after its creation; none once a container restarted: Ready then tells of the restart,
    not of the start)."""
    status = pod.status
    ready = next((c for c in (status.conditions or []) if c.type == "Ready"
                  and c.status == "True"), None) if status else None
    created, became = pod.metadata.creation_timestamp, getattr(ready, "last_transition_time",
                                                               None)
    restarted = any(c.restart_count for c in (status.container_statuses or [])
                    ) if status else False
    started = (became - created).total_seconds() if (
        created and became and not restarted) else None
    return WorkerPod(pod.metadata.name, dict(pod.metadata.annotations or {}),
                     dict(pod.metadata.labels or {}), assigned=bool(pod.spec.node_name),
                     phase=(status.phase if status else None) or "Pending",
                     ready=ready is not None, start_seconds=started, created=created)


def unguarded() -> float:
    """The guard of an operator that acts without leader election: no limit of its own."""
    return REQUEST_TIMEOUT


class Kube:
    """An API client for the operator's writes, with one field manager for all of them.

    ``guard`` runs before every write and gives the seconds it may take; with leader
    election it ends the process once this one may no longer hold the Lease, and gives the
    time left until a standby may act (:meth:`LeaseElector.check`): a write never lands
    after another process may have started writing.
    """

    def __init__(self, api: client.ApiClient, guard: Callable[[], float] = unguarded,
                 instance: str = MANAGER) -> None:
        self.api = api
        self.guard = guard
        # This process, as its Events' reportingInstance (client-go's convention: the
        # controller's pod, here with the Lease holder's suffix).
        self.instance = instance
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.coordination = client.CoordinationV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.networking = client.NetworkingV1Api(api)
        self.events = Correlator(time.monotonic)

    @classmethod
    async def connect(cls, identity: str, guard: Callable[[], float] = unguarded) -> Kube:
        """A client from the in-cluster account or the kubeconfig; its User-Agent names
        the process (``identity``), so the audit log tells two operator processes apart."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:
            await config.load_kube_config()
        api = client.ApiClient()
        api.user_agent = f"{MANAGER}/{__version__} ({identity})"
        return cls(api, guard, identity)

    async def close(self) -> None:
        await self.api.close()

    def _write_timeout(self, what: str) -> float:
        """Pass the guard; the timeout of a write that may start now."""
        budget = min(REQUEST_TIMEOUT, self.guard())
        if budget <= 0:
            raise KubeError(what, TimeoutError("no time left before the Lease may pass on"))
        return budget

    async def apply(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply ``obj`` (a Deployment, ConfigMap or Service) as the operator."""
        meta = obj["metadata"]
        name, namespace, kind = meta["name"], meta["namespace"], obj["kind"]
        patch = {"apps/v1/Deployment": self.apps.patch_namespaced_deployment,
                 "v1/ConfigMap": self.core.patch_namespaced_config_map,
                 "v1/Service": self.core.patch_namespaced_service,
                 "policy/v1/PodDisruptionBudget":
                     self.policy.patch_namespaced_pod_disruption_budget,
                 "networking.k8s.io/v1/NetworkPolicy":
                     self.networking.patch_namespaced_network_policy}[
                     f"{obj['apiVersion']}/{kind}"]
        what = f"applying {kind} {namespace}/{name}"
        timeout = self._write_timeout(what)
        try:
            await _patch(patch, name, namespace, obj, content_type=APPLY, force=True,
                         timeout=timeout)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            raise KubeError(what, err) from None

    async def delete_deployment(self, namespace: str, name: str) -> None:
        await self.delete("Deployment", namespace, name)

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a child (a Deployment, PodDisruptionBudget, NetworkPolicy or Service);
        gone is fine."""
        remove = {"Deployment": self.apps.delete_namespaced_deployment,
                  "Service": self.core.delete_namespaced_service,
                  "PodDisruptionBudget": self.policy.delete_namespaced_pod_disruption_budget,
                  "NetworkPolicy": self.networking.delete_namespaced_network_policy}[kind]
        what = f"deleting {kind} {namespace}/{name}"
        timeout = self._write_timeout(what)
        try:
            await remove(name, namespace, propagation_policy="Background",
                         _request_timeout=timeout)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            if getattr(err, "status", None) != 404:
                raise KubeError(what, err) from None

    async def _pods(self, namespace: str, labels: Mapping[str, str]) -> list[Any]:
        """The pods with ``labels`` (``V1Pod``s)."""
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            found = await self.core.list_namespaced_pod(namespace, label_selector=selector,
                                                        _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            raise KubeError(f"listing pods in {namespace}", err) from None
        return list(found.items)

    async def pod_bodies(self, namespace: str, labels: Mapping[str, str]
                         ) -> list[dict[str, Any]]:
        """The pods with ``labels`` as the API shows them (JSON), to read why they do not
        start (``status.pod_stall``)."""
        return [self.api.sanitize_for_serialization(pod)
                for pod in await self._pods(namespace, labels)]

    async def gated_pods(self, namespace: str, labels: Mapping[str, str], gate: str
                         ) -> GatedPods:
        """The pods with ``labels`` that may run or still run (terminating ones included;
        finished ones, e.g. evicted, left out) split by ``gate``."""
        pods = await self._pods(namespace, labels)
        gated: list[str] = []
        others: list[str] = []
        for pod in sorted(pods, key=lambda p: (p.metadata.creation_timestamp,
                                                     p.metadata.name)):
            if pod.status and pod.status.phase in ("Succeeded", "Failed"):
                continue
            gates = {g.name for g in (pod.spec.scheduling_gates or [])}
            (gated if gate in gates else others).append(pod.metadata.name)
        return GatedPods(gated=tuple(gated), others=tuple(others))

    async def ungate_pod(self, namespace: str, name: str) -> None:
        """Lift a pod's scheduling gates (a pod may only lose gates, never gain them)."""
        what = f"lifting the gate of Pod {namespace}/{name}"
        timeout = self._write_timeout(what)
        try:
            await _patch(self.core.patch_namespaced_pod, name, namespace,
                         {"spec": {"schedulingGates": []}}, content_type=MERGE, timeout=timeout)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            if getattr(err, "status", None) != 404:
                raise KubeError(what, err) from None

    async def metamapper_uid(self, namespace: str, name: str) -> str | None:
        """The uid of the Metamapper ``namespace/name`` now, None when there is none."""
        try:
            obj = await self.custom.get_namespaced_custom_object(
                crd.GROUP, crd.VERSION, namespace, crd.PLURAL, name,
                _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            if getattr(err, "status", None) == 404:
                return None
            raise KubeError(f"reading Metamapper {namespace}/{name}", err) from None
        return str(obj["metadata"]["uid"])

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of a Secret, or None when it does not exist."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace,
                                                            _request_timeout=REQUEST_TIMEOUT)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            if getattr(err, "status", None) == 404:
                return None
            raise KubeError(f"reading Secret {namespace}/{name}", err) from None
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        what = f"scaling Deployment {namespace}/{name}"
        timeout = self._write_timeout(what)
        try:
            await _patch(self.apps.patch_namespaced_deployment_scale, name, namespace,
                         {"spec": {"replicas": replicas}}, content_type=MERGE, timeout=timeout)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            raise KubeError(what, err) from None

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        what = f"updating status of {namespace}/{name}"
        timeout = self._write_timeout(what)
        try:
            await _patch(self.custom.patch_namespaced_custom_object_status, crd.GROUP,
                         crd.VERSION, namespace, crd.PLURAL, name, {"status": dict(status)},
                         content_type=MERGE, timeout=timeout)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            if getattr(err, "status", None) != 404:  # deleted meanwhile: nothing left to report on
                raise KubeError(what, err) from None

    async def event(self, involved: Mapping[str, Any], type: str, reason: str,
                    message: str) -> None:
        """Post a Kubernetes Event about a Metamapper (``involved`` is its metadata).

        Correlated as client-go does (:mod:`metamapper_operator.events`): a repeat of a
        recent identical event raises that Event's count instead of creating another, and
        each object's events are rate-limited. A failure to post is logged, never raised:
        an event is worth less than the work it reports on.
        """
        namespace, name = involved["namespace"], involved["name"]
        key = EventKey(involved=Involved(namespace=namespace, name=name,
                                         uid=involved.get("uid")),
                       type=type, reason=reason, message=message[:1024])
        if not self.events.admit(key.involved):
            log.info("event %s on %s/%s dropped: too many events about it", reason,
                     namespace, name)
            return
        try:
            repeat = self.events.repeat_of(key)
            if repeat is not None and await self._count_again(key, repeat):
                return
            event_name = await self._create_event(key)
        except (KubeError, ApiException, *TRANSPORT_ERRORS) as err:
            log.warning("could not post event %s on %s/%s: %s", reason, namespace, name,
                        err if isinstance(err, KubeError) else KubeError("posting", err))
            return
        self.events.posted(key, event_name, 1)

    async def _count_again(self, key: EventKey, repeat: Posted) -> bool:
        """Count one more ``key`` in the Event that holds its series; False when that
        Event is gone (expired by the apiserver's TTL, or deleted)."""
        namespace = key.involved.namespace
        timeout = self._write_timeout(f"counting event {namespace}/{repeat.name}")
        patch = {"count": repeat.count + 1,
                 "lastTimestamp": datetime.datetime.now(datetime.UTC).isoformat()}
        try:
            await _patch(self.core.patch_namespaced_event, repeat.name, namespace, patch,
                         content_type=MERGE, timeout=timeout)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        self.events.posted(key, repeat.name, repeat.count + 1)
        return True

    async def _create_event(self, key: EventKey) -> str:
        """Create a new Event for ``key``; its name."""
        involved, now = key.involved, datetime.datetime.now(datetime.UTC)
        name = f"{involved.name}.{uuid.uuid4().hex[:12]}"
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name, namespace=involved.namespace),
            involved_object=client.V1ObjectReference(
                api_version=crd.API_VERSION, kind=crd.KIND, name=involved.name,
                namespace=involved.namespace, uid=involved.uid),
            type=key.type, reason=key.reason, message=key.message, count=1,
            first_timestamp=now, last_timestamp=now,
            source=client.V1EventSource(component=MANAGER), reporting_component=MANAGER,
            reporting_instance=self.instance,
        )
        timeout = self._write_timeout(f"posting event {involved.namespace}/{name}")
        await self.core.create_namespaced_event(involved.namespace, body,
                                                _request_timeout=timeout)
        return name

    async def list_pods(self, namespace: str, labels: Mapping[str, str]
                        ) -> dict[str, WorkerPod]:
        """The pods with ``labels`` that are not being deleted nor finished, by name. A
        finished pod (evicted: Failed; or Succeeded) counts for no ReplicaSet, whose
        controller leaves it out of its pods as it does one being deleted."""
        pods = await self._pods(namespace, labels)
        return {pod.metadata.name: _worker_pod(pod) for pod in pods
                if pod.metadata.deletion_timestamp is None
                and not (pod.status and pod.status.phase in FINISHED)}

    async def annotate_pod(self, namespace: str, name: str,
                           annotations: Mapping[str, str | None],
                           labels: Mapping[str, str | None] | None = None) -> None:
        """Set (None: remove) a pod's ``annotations``, and ``labels`` in the same patch."""
        what = f"annotating Pod {namespace}/{name}"
        timeout = self._write_timeout(what)
        metadata = {"annotations": dict(annotations), **({"labels": dict(labels)} if labels
                                                          else {})}
        try:
            await _patch(self.core.patch_namespaced_pod, name, namespace,
                         {"metadata": metadata}, content_type=MERGE, timeout=timeout)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            if getattr(err, "status", None) != 404:
                raise KubeError(what, err) from None
