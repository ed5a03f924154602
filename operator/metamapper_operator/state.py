"""What the operator remembers of each Metamapper between events, in memory.

Everything here is rebuilt from the cluster on start (kopf's resume handlers and the
watches), so losing it on a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from metamapper_operator.builders import Held
from metamapper_operator.model import Fleet
from metamapper_operator.references import BrokerAccess
from metamapper_operator.status import Fault, PoolScale

# How long a size the operator set may take to show in the Deployment watch.
SCALE_SETTLE_SECONDS = 10.0
# Reconciles carried out at once, the others wait their turn: a burst of thousands
# (creations, a restart) keeps the memory of what is in flight, and the apiserver's queue,
# bounded. The autoscaler never waits for a turn.
RECONCILES_AT_ONCE = 16


class Key(NamedTuple):
    """A Metamapper's place. A tuple, so kopf's index keys ``(namespace, name)`` find it."""

    namespace: str
    name: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ReconcileInputs:
    """What a reconcile of one Metamapper starts from: its spec and metadata as far as
    the operator reads them, and its children as the watches show them."""

    generation: int
    annotations: frozenset[tuple[str, str]]
    labels: frozenset[tuple[str, str]]
    deployments: frozenset[Any]
    others: frozenset[Any]  # content hashes of the rest, by (kind, name)


@dataclass(slots=True)
class FleetState:
    """What the reconciler learned of one Metamapper, for the status and the autoscaler."""

    uid: str = ""
    generation: int = 0
    fleet: Fleet | None = None
    access: BrokerAccess | None = None
    invalid: str | None = None
    broker_error: str | None = None
    held: str | None = None  # why the scheduler is held back (a Warning event was posted)
    held_parts: tuple[Held, ...] = ()  # optional parts whose Secret is missing (announced)
    # Per Deployment, the foreign template fields last overwritten (see plan.children_plan).
    repaired: dict[str, str] = field(default_factory=dict)
    scaling: dict[str, PoolScale] = field(default_factory=dict)
    # Broker queues with messages, no consumer and no pool (None: the broker cannot tell).
    unconsumed: tuple[str, ...] | None = None
    # Steps of this object that failed, by step (containment.Boundary and settle): each
    # shows in status until the step succeeds again.
    faults: dict[str, Fault] = field(default_factory=dict)
    status: str | None = None  # as last written or seen, as JSON (see publish.compact)
    # What the last reconcile that succeeded started from, and when (monotonic): a resync
    # finding the same skips the object (see handlers.resync_loop).
    reconciled: ReconcileInputs | None = None
    reconciled_at: float = 0.0
    # Known from kopf's index alone (see listed.Learner): its pools are scaled, but what its
    # status shows is not known until its reconcile brings the status the watch saw.
    listed: bool = False


@dataclass(frozen=True, slots=True)
class ScaledSize:
    """A size the operator set on a Deployment, and when (``time.monotonic``)."""

    replicas: int
    at: float


@dataclass(frozen=True, slots=True)
class AppliedHash:
    """A child's content hash the operator just applied, and when (``time.monotonic``)."""

    spec_hash: str
    at: float


@dataclass(slots=True)
class ObjectStates:
    """State and lock by Metamapper. Only the reconciler creates an object's state
    (:meth:`state`), and the autoscaler for an object in kopf's index that has none yet
    (:class:`listed.Learner`); everyone else looks it up and skips an object that has none.
    A deleted object leaves the index before its state is forgotten, so nothing brings
    back the state of a deleted object, and a re-created one (a new uid) starts afresh."""

    fleets: dict[Key, FleetState] = field(default_factory=dict)
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    # Turns for reconciles (see RECONCILES_AT_ONCE), taken before an object's lock.
    turns: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(RECONCILES_AT_ONCE))
    scaled: dict[tuple[Key, str], ScaledSize] = field(default_factory=dict)
    # By (object, kind, name): children just applied, until the watches show them.
    applied: dict[tuple[Key, str, str], AppliedHash] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    # Counts what may change a pool's scaling: a reconcile, an object gone, a Deployment
    # event. The autoscaler skips a cycle that finds it, and the brokers' figures, as
    # the last cycle with every pool at rest left them.
    revision: int = 0

    def state(self, key: Key, uid: str) -> tuple[FleetState, asyncio.Lock]:
        """The state and lock of the object ``key`` with ``uid``; a new object's are new."""
        state = self.fleets.get(key)
        if state is None or state.uid != uid:
            # Only an object re-created under the same name leaves something to forget;
            # forgetting costs a walk over every metric series, so a first sight (thousands
            # at an operator's start) must not pay it.
            if state is not None:
                self.forget(key)
            state = self.fleets[key] = FleetState(uid=uid)
            self.locks[key] = asyncio.Lock()
        return state, self.locks[key]

    def note_change(self) -> None:
        """Something a pool's scaling reads changed (see ``revision``)."""
        self.revision += 1

    def settling(self) -> bool:
        """Whether a size just set may not show in the Deployment watch yet."""
        now = self.clock()
        return any(now - noted.at < SCALE_SETTLE_SECONDS for noted in self.scaled.values())

    def note_scale(self, key: Key, deployment: str, replicas: int) -> None:
        """Remember a size just set, until the watch shows it."""
        self.scaled[(key, deployment)] = ScaledSize(replicas, self.clock())

    def replicas(self, key: Key, deployment: str, indexed: int) -> int:
        """A Deployment's size: the watch's, or one just set that it does not show yet."""
        noted = self.scaled.get((key, deployment))
        if (noted and noted.replicas != indexed
                and self.clock() - noted.at < SCALE_SETTLE_SECONDS):
            return noted.replicas
        self.scaled.pop((key, deployment), None)
        return indexed

    def note_applied(self, key: Key, kind: str, name: str, spec_hash: str) -> None:
        """Remember a child just applied, until the watch shows it."""
        self.applied[(key, kind, name)] = AppliedHash(spec_hash, self.clock())

    def content_hash(self, key: Key, kind: str, name: str, indexed: str | None) -> str | None:
        """A child's content hash: the index's, or one just applied that it does not show
        yet (a reconcile right after another must not apply, and announce, it again)."""
        noted = self.applied.get((key, kind, name))
        if (noted and noted.spec_hash != indexed
                and self.clock() - noted.at < SCALE_SETTLE_SECONDS):
            return noted.spec_hash
        self.applied.pop((key, kind, name), None)
        return indexed

    def forget(self, key: Key) -> None:
        """Drop everything about a Metamapper that is gone."""
        self.note_change()
        self.fleets.pop(key, None)
        self.locks.pop(key, None)
        for noted in [k for k in self.scaled if k[0] == key]:
            del self.scaled[noted]
        for applied in [k for k in self.applied if k[0] == key]:
            del self.applied[applied]
