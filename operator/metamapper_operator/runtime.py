"""What the kopf handlers and the autoscaler loop share: the settings, the API edge, the
Secret cache and the state of every object (:mod:`state`), with status publishing
(:mod:`publish`) and forgetting a deleted object (its metric series too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metamapper_operator import metrics
from metamapper_operator.config import Config
from metamapper_operator.containment import settle
from metamapper_operator.kube import Kube
from metamapper_operator.publish import publish
from metamapper_operator.references import SecretCache
from metamapper_operator.state import Key, ObjectStates
from metamapper_operator.status import DeploymentState, Fault


@dataclass
class Runtime(ObjectStates):
    """The operator's shared state, one per process (in kopf's memo)."""

    config: Config = field(kw_only=True)
    kube: Kube = field(kw_only=True)
    secrets: SecretCache = field(kw_only=True)

    def forget(self, key: Key) -> None:
        """Drop everything about a Metamapper that is gone, its metric series too."""
        super().forget(key)
        metrics.forget(key.namespace, key.name)

    async def settle(self, key: Key, step: str, fault: Fault | None) -> bool:
        """Record how one of the object's steps ended (``containment.settle``), with one
        Warning event for a fault that is new or whose message changed; True when the
        object's faults changed (its status is to be written again). Nothing for an
        object not known (gone)."""
        state = self.fleets.get(key)
        if state is None:
            return False
        before = state.faults.get(step)
        announce = settle(state.faults, step, fault)
        if announce is not None:
            await self.kube.event({"namespace": key.namespace, "name": key.name,
                                   "uid": state.uid}, "Warning", announce.reason,
                                  f"{announce.step}: {announce.message}")
        return state.faults.get(step) != before

    async def publish(self, key: Key, deployments: Mapping[str, DeploymentState],
                      seen_status: Mapping[str, Any] | None = None) -> None:
        """Write the status of ``key`` if it changed; nothing for a deleted object."""
        state = self.fleets.get(key)
        if state is not None:
            await publish(self.kube, key, state, deployments, seen_status)
