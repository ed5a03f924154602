"""The operator's in-memory state, shared by the kopf handlers and the autoscaler loop.

Everything here is rebuilt from the cluster on start (kopf's resume handlers and
indexes), so losing it on a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from metamapper_operator import metrics
from metamapper_operator.kube import Kube
from metamapper_operator.model import Fleet
from metamapper_operator.references import BrokerAccess, SecretCache
from metamapper_operator.status import Observed, PoolScale, changes, render

Key = tuple[str, str]  # (namespace, name) of a Metamapper
# How long a size the operator set may take to show in the Deployment watch index.
SCALE_SETTLE_SECONDS = 10.0


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Config:
    """Operator-wide settings, from the command line."""

    resync_seconds: float = 60.0
    poll_seconds: float = 5.0
    secret_ttl_seconds: float = 300.0
    # The longest one autoscaling cycle may take (at least one polling interval).
    cycle_limit_seconds: float = 30.0
    # This process, as named in its requests' User-Agent and as a Lease holder.
    identity: str = "metamapper-operator"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        """Settings from METAMAPPER_* variables (the command line sets them)."""
        defaults = cls()
        return cls(
            resync_seconds=float(env.get("METAMAPPER_RESYNC_SECONDS", defaults.resync_seconds)),
            poll_seconds=float(env.get("METAMAPPER_POLL_SECONDS", defaults.poll_seconds)),
            secret_ttl_seconds=float(env.get("METAMAPPER_SECRET_TTL_SECONDS",
                                             defaults.secret_ttl_seconds)),
        )


@dataclass(frozen=True)
class Inputs:
    """What a reconcile of one Metamapper starts from: its spec and metadata as far as
    the operator reads them, and its children as the watch indexes show them."""

    generation: int
    annotations: frozenset[tuple[str, str]]
    labels: frozenset[tuple[str, str]]
    deployments: frozenset[Any]
    configmaps: frozenset[tuple[str, str]]


@dataclass
class FleetState:
    """What the reconciler learned of one Metamapper, for the status and the autoscaler."""

    uid: str = ""
    generation: int = 0
    fleet: Fleet | None = None
    access: BrokerAccess | None = None
    invalid: str | None = None
    failure: str | None = None
    broker_error: str | None = None
    held: str | None = None  # why the scheduler is held back (a Warning event was posted)
    # Per Deployment, the foreign template fields last overwritten (see _converge).
    repaired: dict[str, str] = field(default_factory=dict)
    scaling: dict[str, PoolScale] = field(default_factory=dict)
    status: Mapping[str, Any] | None = None  # as last written or seen
    # What the last reconcile that succeeded started from, and when (monotonic): a resync
    # finding the same skips the object (see handlers.resync_loop).
    reconciled: Inputs | None = None
    reconciled_at: float = 0.0


@dataclass
class Runtime:
    """State by Metamapper. Only the reconciler creates an object's state (:meth:`state`);
    everyone else looks it up and skips an object that has none, so nothing brings back
    the state of a deleted object, and a re-created one (a new uid) starts afresh."""

    config: Config
    kube: Kube
    secrets: SecretCache
    fleets: dict[Key, FleetState] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    scaled: dict[tuple[Key, str], tuple[int, float]] = field(default_factory=dict)

    def state(self, key: Key, uid: str) -> tuple[FleetState, asyncio.Lock]:
        """The state and lock of the object ``key`` with ``uid``; a new object's are new."""
        state = self.fleets.get(key)
        if state is None or state.uid != uid:
            self.forget(key)
            state = self.fleets[key] = FleetState(uid=uid)
            self.locks[key] = asyncio.Lock()
        return state, self.locks[key]

    def note_scale(self, key: Key, deployment: str, replicas: int) -> None:
        """Remember a size just set, until the watch index shows it."""
        self.scaled[(key, deployment)] = (replicas, time.monotonic())

    def replicas(self, key: Key, deployment: str, indexed: int) -> int:
        """A Deployment's size: the index's, or one just set that it does not show yet."""
        noted = self.scaled.get((key, deployment))
        if noted and noted[0] != indexed and time.monotonic() - noted[1] < SCALE_SETTLE_SECONDS:
            return noted[0]
        self.scaled.pop((key, deployment), None)
        return indexed

    def forget(self, key: Key) -> None:
        """Drop everything about a Metamapper that is gone, its metric series too."""
        self.fleets.pop(key, None)
        self.locks.pop(key, None)
        for noted in [k for k in self.scaled if k[0] == key]:
            del self.scaled[noted]
        metrics.forget(*key)

    async def publish(self, key: Key, deployments: Mapping[str, Any],
                      seen_status: Mapping[str, Any] | None = None) -> None:
        """Render the status of ``key`` and write it if it differs from the last one."""
        state = self.fleets.get(key)
        if state is None:  # deleted meanwhile
            return
        if seen_status is not None and state.status is None:
            state.status = seen_status
        previous = state.status or {}
        observed = Observed(
            generation=state.generation, now=now(), fleet=state.fleet,
            transport=state.access.transport if state.access else None,
            invalid=state.invalid, failure=state.failure, broker_error=state.broker_error,
            deployments=deployments, scaling=state.scaling,
        )
        new = render(observed, previous)
        patch = changes(previous, new)
        if patch:
            await self.kube.patch_status(key[0], key[1], patch)
            state.status = {**{k: v for k, v in previous.items() if k == "kopf"}, **new}
