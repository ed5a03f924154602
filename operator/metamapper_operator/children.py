"""What exists of every Metamapper's children, by owner: the records a reconcile compares
with what it wants, kept current by the operator's watches (:mod:`watching`).

The operator watches its children itself rather than through kopf's indexes: kopf keeps
a memory record and index bookkeeping for every object it watches, several times what
these records take, and a fleet has five children or more. Nothing here does I/O: the
watches feed it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metamapper_operator.builders import LABEL_INSTANCE, MANAGER, SPEC_HASH
from metamapper_operator.state import Key
from metamapper_operator.status import (
    DeploymentState,
    deployment_stall,
    foreign_template_fields,
)


@dataclass(frozen=True)
class ChildKind:
    """A kind of child and where the API serves it."""

    kind: str
    group: str      # "" for the core group
    version: str
    plural: str

    def path(self, namespace: str | None) -> str:
        """The collection's path, in one namespace or across all of them."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{where}/{self.plural}"


KINDS = (ChildKind("Deployment", "apps", "v1", "deployments"),
         ChildKind("ConfigMap", "", "v1", "configmaps"),
         ChildKind("PodDisruptionBudget", "policy", "v1", "poddisruptionbudgets"),
         ChildKind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies"),
         ChildKind("Service", "", "v1", "services"))


def deployment_state(body: Mapping[str, Any]) -> DeploymentState:
    """A Deployment as a reconcile and the status read it."""
    meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    return DeploymentState(
        name=meta["name"], spec_hash=(meta.get("annotations") or {}).get(SPEC_HASH, ""),
        replicas=int(spec.get("replicas", 1)),
        ready=int(status.get("readyReplicas", 0)),
        updated=int(status.get("updatedReplicas", 0)),
        generation=int(meta.get("generation", 0)),
        observed_generation=int(status.get("observedGeneration", 0)),
        foreign=foreign_template_fields(meta.get("managedFields") or [], MANAGER),
        stall=deployment_stall(status.get("conditions") or []))


@dataclass(frozen=True, slots=True)
class Child:
    """One child as a watch event or a listing showed it."""

    owner: Key
    kind: str
    name: str
    spec_hash: str
    deployment: DeploymentState | None = None   # for a Deployment


def child_of(kind: str, body: Mapping[str, Any]) -> Child:
    meta = body["metadata"]
    owner = Key(meta.get("namespace") or "", (meta.get("labels") or {}).get(LABEL_INSTANCE, ""))
    spec_hash = (meta.get("annotations") or {}).get(SPEC_HASH, "")
    return Child(owner, kind, meta["name"], spec_hash,
                 deployment_state(body) if kind == "Deployment" else None)


@dataclass(slots=True)
class Owned:
    """One Metamapper's children: Deployments by name, content hashes of the rest by
    (kind, name)."""

    deployments: dict[str, DeploymentState] = field(default_factory=dict)
    hashes: dict[tuple[str, str], str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.deployments or self.hashes)

    def drop(self, kind: str) -> None:
        if kind == "Deployment":
            self.deployments = {}
        else:
            self.hashes = {k: h for k, h in self.hashes.items() if k[0] != kind}


Feed = tuple[str, str | None]
"""What one watch covers: a kind, in one namespace or (None) in all of them."""


class Children:
    """Every watched child, by owner, and whether every feed has been listed once (a
    reconcile before that would take children that exist for missing ones)."""

    def __init__(self, feeds: Iterable[Feed]) -> None:
        self._owned: dict[Key, Owned] = {}
        # Deployments whose pods are not all ready and up to date, by (owner, name): the
        # only ones whose pods may tell why a rollout does not finish (see rollouts.py).
        self.unsettled: set[tuple[Key, str]] = set()
        # Why a feed not listed yet failed to list, by feed (see refused).
        self.refusals: dict[Feed, str] = {}
        self._unlisted = set(feeds)
        self.listed = asyncio.Event()
        if not self._unlisted:
            self.listed.set()

    def of(self, key: Key) -> Owned:
        """The children of ``key`` (empty when it has none): the caller must not change it."""
        return self._owned.get(key) or Owned()

    def deployments(self, key: Key) -> dict[str, DeploymentState]:
        return dict(self.of(key).deployments)

    def seen(self, child: Child) -> None:
        """A child added or changed."""
        owned = self._owned.setdefault(child.owner, Owned())
        if child.deployment is not None:
            owned.deployments[child.name] = child.deployment
            if child.deployment.settled:
                self.unsettled.discard((child.owner, child.name))
            else:
                self.unsettled.add((child.owner, child.name))
        else:
            owned.hashes[child.kind, child.name] = child.spec_hash

    def gone(self, child: Child) -> None:
        """A child deleted."""
        owned = self._owned.get(child.owner)
        if owned is None:
            return
        if child.kind == "Deployment":
            owned.deployments.pop(child.name, None)
            self.unsettled.discard((child.owner, child.name))
        else:
            owned.hashes.pop((child.kind, child.name), None)
        if not owned:
            del self._owned[child.owner]

    def refused(self, feed: Feed, why: str) -> None:
        """A listing of ``feed`` failed: until one succeeds, reconciles wait and say why."""
        if feed in self._unlisted:
            self.refusals[feed] = why

    def refusal(self) -> str | None:
        """Why the children are not all listed, when a listing failed; None when every
        feed is listed or is still being listed."""
        return "; ".join(self.refusals.values()) or None

    def changed(self, event: str, child: Child) -> None:
        """A watch event: ADDED, MODIFIED or DELETED."""
        (self.gone if event == "DELETED" else self.seen)(child)

    def replace(self, feed: Feed, children: Iterable[Child]) -> None:
        """A full listing of ``feed``: children it covers that are not in it are gone."""
        kind, namespace = feed
        if kind == "Deployment":
            self.unsettled = {entry for entry in self.unsettled
                              if namespace is not None and entry[0].namespace != namespace}
        for key, owned in list(self._owned.items()):
            if namespace is None or key.namespace == namespace:
                owned.drop(kind)
                if not owned:
                    del self._owned[key]
        for child in children:
            self.seen(child)
        self._unlisted.discard(feed)
        self.refusals.pop(feed, None)
        if not self._unlisted:
            self.listed.set()
