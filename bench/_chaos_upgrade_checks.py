"""What an operator upgrade in the middle of the soak's stream must leave, read from the
objects as the upgrade step (``_chaos_upgrade``) saw them before and after it.

- the Metamappers' specs are the ones written before, but for the fields the new CRD
  defaults (the apiserver fills them in as it reads a stored object: :func:`defaulted`),
  and their generations are the same: an upgrade edits no user's object;
- every pool's Deployment is the same object, carries the template this checkout's
  builders render for the fleet (its ``spec-hash``), has finished its rollout, and its
  pods are all of its current ReplicaSet; a pool moved to a new ReplicaSet exactly when
  its pod template changed (``PoolSeen``, :func:`pool_findings`);
- the runs the rollout cut off are those on the pods of the replaced ReplicaSets
  (:func:`replaced_pods`, which the ledger's ``pool-rollout`` fault names);
- from 0.1.0, as docs/upgrading.md says, no pool's template changed and no pod was
  replaced, but in a fleet whose ``celery.settings`` hold ``"$remove"``
  (:func:`rollouts_the_notes_rule_out`);
- every Warning event since the upgrade began is explained (:func:`unexplained_warnings`),
  but the earlier release's operator's, posted while it still led: its behaviour is not
  this checkout's to answer for (:func:`earlier_release_warnings` shows them).
"""

from __future__ import annotations

import copy
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from _chaos_faults import ROLLOUT
from _chaos_ledger import Fault
from metamapper_beat import REMOVE
from metamapper_operator import builders, model

Json = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"
TEMPLATE_HASH = "pod-template-hash"


# --- the Metamappers ---------------------------------------------------------------


def defaulted(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the defaults of the structural ``schema`` (an OpenAPI v3 schema of a
    CRD) filled in where a property is absent, at every depth of objects, maps
    (``additionalProperties``) and lists, as the apiserver defaults an object it reads from
    storage. (A ``null`` is left as it is: the apiserver defaults it only for a property
    that is not nullable, which no default of this CRD is.)"""
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties") or {}
        filled = {**value, **{key: copy.deepcopy(inner["default"])
                              for key, inner in properties.items()
                              if key not in value and "default" in inner}}
        extra = schema.get("additionalProperties")
        return {key: defaulted(properties[key], inner) if key in properties
                else defaulted(extra, inner) if isinstance(extra, dict) else inner
                for key, inner in filled.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [defaulted(schema["items"], item) for item in value]
    return value


@dataclass(frozen=True)
class FleetSeen:
    """A Metamapper as read: its spec and generation."""

    spec: Json
    generation: int


def fleets_seen(metamappers: Iterable[Mapping[str, Any]]) -> dict[str, FleetSeen]:
    return {m["metadata"]["name"]: FleetSeen(m["spec"], int(m["metadata"]["generation"]))
            for m in metamappers}


def spec_schema(crd: Mapping[str, Any], version: str) -> Json:
    """The schema of ``spec`` in the CustomResourceDefinition ``crd`` for ``version``."""
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: Json = served["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def fleet_findings(before: Mapping[str, FleetSeen], after: Mapping[str, FleetSeen],
                   schema: Mapping[str, Any]) -> list[str]:
    """What changed in the Metamappers beyond the defaults of the new ``schema`` (of their
    spec): nothing, for an upgrade."""
    found = [f"{name}: gone" for name in sorted(set(before) - set(after))]
    found += [f"{name}: new" for name in sorted(set(after) - set(before))]
    for name in sorted(set(before) & set(after)):
        was, now = before[name], after[name]
        if now.generation != was.generation:
            found.append(f"{name}: generation {was.generation} -> {now.generation}")
        expected = defaulted(schema, was.spec)
        if now.spec != expected:
            keys = sorted(k for k in set(expected) | set(now.spec)
                          if expected.get(k) != now.spec.get(k))
            found.append(f"{name}: spec changed beyond the new defaults in {', '.join(keys)}")
    return found


def rendered_hashes(metamapper: Mapping[str, Any], transport: str) -> dict[str, str]:
    """The spec hash of each pool's Deployment as this checkout's operator renders the
    Metamapper (by name): what the Deployments carry once it has reconciled them."""
    fleet = model.parse(metamapper)
    return {obj["metadata"]["name"]: obj["metadata"]["annotations"][builders.SPEC_HASH]
            for obj in builders.desired_objects(fleet, transport, {})
            if obj["kind"] == "Deployment"
            and obj["metadata"]["labels"].get(builders.LABEL_COMPONENT) == "worker"}


# --- the pools ---------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSeen:
    """A pool's Deployment as read, with its current ReplicaSet (the one of its latest
    revision; None before the controller made it) and its pods that are not of it."""

    fleet: str
    uid: str
    template: Json
    spec_hash: str | None
    strategy: str
    rolled_out: bool
    current: str | None
    stragglers: tuple[str, ...]


def _rolled_out(deployment: Mapping[str, Any]) -> bool:
    """Its controller has seen its latest spec, and every replica it wants is of the latest
    template and available (the status leaves out counts that are 0)."""
    status = deployment.get("status") or {}
    wanted = deployment["spec"].get("replicas", 1)
    return (status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
            and all(status.get(field, 0) == wanted for field in (
                "replicas", "updatedReplicas", "readyReplicas", "availableReplicas")))


def pools_seen(deployments: Iterable[Mapping[str, Any]],
               replicasets: Iterable[Mapping[str, Any]],
               pods: Iterable[Mapping[str, Any]]) -> dict[str, PoolSeen]:
    """The worker Deployments (by name) from the listings of the namespace's Deployments,
    ReplicaSets and worker pods."""
    sets = list(replicasets)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    seen = {}
    for deployment in deployments:
        meta = deployment["metadata"]
        revision = (meta.get("annotations") or {}).get(REVISION)
        current = next((rs for rs in sets
                        if any(ref.get("uid") == meta["uid"]
                               for ref in rs["metadata"].get("ownerReferences") or [])
                        and (rs["metadata"].get("annotations") or {}).get(REVISION)
                        == revision), None)
        template_hash = current["metadata"]["labels"].get(TEMPLATE_HASH) if current else None
        selector = deployment["spec"]["selector"]["matchLabels"]
        mine = [p for p in live if all(p["metadata"].get("labels", {}).get(key) == value
                                       for key, value in selector.items())]
        seen[meta["name"]] = PoolSeen(
            fleet=meta["labels"][builders.LABEL_INSTANCE], uid=meta["uid"],
            template=deployment["spec"]["template"],
            spec_hash=(meta.get("annotations") or {}).get(builders.SPEC_HASH),
            strategy=deployment["spec"].get("strategy", {}).get("type", "RollingUpdate"),
            rolled_out=_rolled_out(deployment),
            current=current["metadata"]["name"] if current else None,
            stragglers=tuple(sorted(p["metadata"]["name"] for p in mine
                                    if p["metadata"]["labels"].get(TEMPLATE_HASH)
                                    != template_hash)))
    return seen


def pool_findings(before: Mapping[str, PoolSeen], after: Mapping[str, PoolSeen],
                  expected: Mapping[str, str]) -> list[str]:
    """What keeps the pools from being on this checkout's template (``expected``: the
    spec hash of each pool's Deployment as :func:`rendered_hashes` gives it), rolled out,
    by their RollingUpdate, onto a new ReplicaSet exactly when the template changed."""
    found = [f"{name}: no Deployment" for name in sorted(set(expected) - set(after))]
    found += [f"{name}: not a pool of the fleets" for name in sorted(set(after) - set(expected))]
    found += [f"{name}: gone" for name in sorted(set(before) - set(after))]
    for name in sorted(set(after) & set(expected)):
        now, was = after[name], before.get(name)
        if now.spec_hash != expected[name]:
            found.append(f"{name}: spec hash {now.spec_hash}, this checkout renders "
                         f"{expected[name]}")
        if not now.rolled_out:
            found.append(f"{name}: rollout not finished")
        if now.stragglers:
            found.append(f"{name}: pods of another template: {', '.join(now.stragglers)}")
        if was is None:
            continue
        if now.uid != was.uid:
            found.append(f"{name}: the Deployment was replaced, not rolled")
        if now.strategy != "RollingUpdate":
            found.append(f"{name}: strategy {now.strategy}")
        changed, moved = now.template != was.template, now.current != was.current
        if changed != moved:
            found.append(f"{name}: " + ("template changed, pods not replaced" if changed
                                        else "pods replaced, template unchanged"))
    return found


def replaced_pods(before: Mapping[str, PoolSeen], after: Mapping[str, PoolSeen],
                  pods: Iterable[str]) -> dict[str, frozenset[str]]:
    """Of ``pods`` (names: a ReplicaSet's pod is ``<ReplicaSet>-<suffix>``), those of a
    ReplicaSet the rollout replaced, by pool; only pools moved to a new ReplicaSet."""
    names = sorted(set(pods))
    return {pool: frozenset(n for n in names if n.startswith(f"{was.current}-"))
            for pool, was in before.items()
            if pool in after and was.current and after[pool].current != was.current}


def rolls_from_0_1_0(spec: Mapping[str, Any]) -> bool:
    """Whether an upgrade from 0.1.0 rolls the fleet's pods, by docs/upgrading.md: only if
    its ``celery.settings`` hold the string ``"$remove"`` somewhere (0.1.0 passed it on as
    that string; this checkout removes the key, so the ConfigMap and its hash change)."""
    def holds(value: Any) -> bool:
        if isinstance(value, dict):
            return any(holds(inner) for inner in value.values())
        if isinstance(value, list):
            return any(holds(inner) for inner in value)
        return value == REMOVE

    return holds((spec.get("celery") or {}).get("settings"))


def _differences(was: Any, now: Any, path: str = "") -> list[str]:
    """Where two JSON values differ: dotted paths to the outermost differing parts."""
    if isinstance(was, dict) and isinstance(now, dict):
        return [found for key in sorted(set(was) | set(now))
                for found in _differences(was.get(key), now.get(key),
                                          f"{path}.{key}" if path else key)]
    if isinstance(was, list) and isinstance(now, list) and len(was) == len(now):
        return [found for i, (a, b) in enumerate(zip(was, now, strict=True))
                for found in _differences(a, b, f"{path}[{i}]")]
    return [] if was == now else [path]


def rollouts_the_notes_rule_out(fleets: Mapping[str, FleetSeen],
                                before: Mapping[str, PoolSeen],
                                after: Mapping[str, PoolSeen],
                                faults: Iterable[Fault]) -> list[str]:
    """What an upgrade from 0.1.0 did that docs/upgrading.md says it does not: for the
    pools of the ``fleets`` (as read before it) that :func:`rolls_from_0_1_0` leaves out,
    a pod template changed, a move to a new ReplicaSet, a ``pool-rollout`` recorded on
    their pods."""
    rolling = {name for name, seen in fleets.items() if rolls_from_0_1_0(seen.spec)}
    found = []
    for name in sorted(set(before) & set(after)):
        was, now = before[name], after[name]
        if was.fleet in rolling:
            continue
        changed = _differences(was.template, now.template)
        if changed:
            found.append(f"{name}: pod template changed at {', '.join(changed)}")
        if now.current != was.current:
            found.append(f"{name}: pods replaced ({was.current} -> {now.current})")
    for fault in faults:
        if fault.kind != ROLLOUT.name:
            continue
        pools = sorted(name for name, was in before.items() if was.current and any(
            pod.startswith(f"{was.current}-") for pod in fault.pods))
        if not any(before[name].fleet in rolling for name in pools):
            found.append(f"{', '.join(pools) or 'no pool'}: {ROLLOUT.name} recorded on "
                         f"{', '.join(sorted(fault.pods))}")
    return found


# --- the events --------------------------------------------------------------------


def _seconds(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def event_time(event: Mapping[str, Any]) -> float:
    """When the event last happened: its series' last observation, its last or first
    timestamp, its event time, its creation, whichever is latest (core/v1 Events written
    by events.k8s.io/v1 clients fill only some of them)."""
    stamps = [(event.get("series") or {}).get("lastObservedTime"), event.get("lastTimestamp"),
              event.get("firstTimestamp"), event.get("eventTime"),
              event["metadata"].get("creationTimestamp")]
    return max(_seconds(s) for s in stamps if s)


def readiness_failure(event: Mapping[str, Any]) -> bool:
    """A failed readiness probe: a pod starting (or stopping) is not ready for a moment,
    and nothing acts on it but its Service's endpoints and its pool's ready count, which the
    upgrade's recovery waits for."""
    return (event.get("reason") == "Unhealthy"
            and str(event.get("message", "")).startswith("Readiness probe failed"))


def earlier_release(event: Mapping[str, Any]) -> bool:
    """Posted by an operator of a release before this checkout: one that names no
    ``reportingInstance`` (this checkout's operator names its process on every event)."""
    component = event.get("reportingComponent") or (event.get("source") or {}).get("component")
    return component == builders.MANAGER and not event.get("reportingInstance")


def _shown(event: Mapping[str, Any]) -> str:
    involved = event["involvedObject"]
    return (f"{involved.get('namespace', '')}/{involved.get('kind')}/{involved.get('name')} "
            f"{event.get('reason')}: {event.get('message', '')}")


def _warnings_since(events: Sequence[Mapping[str, Any]], since: float
                    ) -> list[Mapping[str, Any]]:
    """The Warning events since ``since``, from its whole second (most stamps are whole
    seconds)."""
    return [e for e in events
            if e.get("type") == "Warning" and event_time(e) >= math.floor(since)]


def unexplained_warnings(events: Sequence[Mapping[str, Any]], since: float) -> list[str]:
    """The Warning events since ``since`` but readiness failures and the earlier
    release's operator's, each as ``namespace/Kind/name Reason: message``."""
    return [_shown(e) for e in _warnings_since(events, since)
            if not readiness_failure(e) and not earlier_release(e)]


def earlier_release_warnings(events: Sequence[Mapping[str, Any]], since: float) -> list[str]:
    """The Warning events since ``since`` that the earlier release's operator posted."""
    return [_shown(e) for e in _warnings_since(events, since) if earlier_release(e)]
