"""Drain before delete, the decisions: which workers to retire, when a drain is done or has
taken too long, and when a scale-down removes exactly the drained pods. Pure; no I/O, no
clock (the caller passes the time).

A pool shrinks in three steps. The operator picks the pods to remove (idle workers first)
and tells their Celery workers to stop consuming the pool's queues; it waits until each
runs no task and holds none prefetched (tasks waiting for their ETA: below); then it gives
exactly those pods the lowest ``controller.kubernetes.io/pod-deletion-cost`` and lowers
the Deployment's replicas by their number. A drain still busy after its timeout (the pool's
termination grace period: the time a deleted pod would have had) is given up and the
worker consumes again: its task is never cut off.

Tasks waiting for their ETA (``countdown``/``eta``) do not keep a drain waiting. A worker
holds them as messages it has not acknowledged (it acknowledges a task when it runs it, or
when it ends with ``task_acks_late``), and a warm shutdown gives them back to the broker:
Celery cancels their timers when its consumer closes, kombu's Redis transport restores its
unacknowledged messages to their queues when the channel closes (``restore_at_shutdown``),
and RabbitMQ requeues a closed channel's unacknowledged deliveries. Another worker then
holds them until their time. Waiting for them instead would keep a drain waiting for as long
as the furthest ETA (a countdown may outlive any grace period): the drain would time
out, the worker consume again, be picked again, and the pool would never shrink. So a
worker whose only holdings are ETA tasks is drained (:func:`review`), and among workers that
run nothing those holding fewer ETA tasks are retired first (:func:`pick`), idle ones before
all. (A worker killed instead of stopped hands its ETA tasks back only after the Redis
visibility timeout, or at once on RabbitMQ: the drained pod is deleted, which stops it warm.)

Each drain is recorded on its pod (:class:`DrainRecord`, the annotation's value) before its
worker is told anything, with what it takes to finish or undo it: when it started (wall
clock, so that another operator can tell how long it has left) and the queues it stopped.

The ReplicaSet controller ranks the pods it removes by, in order: unassigned before
assigned; Pending before Unknown before Running; not ready before ready; then the lower
deletion cost. A cost decides only among pods equal on the first three, so the drained
pods go first only when none of them ranks above any pod that stays
(:func:`exact_removal`); otherwise the scale-down waits for the next cycle.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAINED_COST = -(2**31)   # the lowest cost there is: nothing ranks below a drained pod
TEMPLATE_HASH = "pod-template-hash"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}
# Pods the ReplicaSet controller no longer counts (it replaces them): evicted, finished.
_ENDED = frozenset({"Failed", "Succeeded"})


@dataclass(frozen=True, slots=True)
class Load:
    """What one worker holds: tasks running, prefetched, and held for their ETA."""

    active: int = 0
    reserved: int = 0
    scheduled: int = 0

    @property
    def total(self) -> int:
        return self.active + self.reserved + self.scheduled

    @property
    def running(self) -> int:
        """The tasks that must end on this worker: running or prefetched. Its ETA tasks
        go back to the broker when it stops (see the module's docstring)."""
        return self.active + self.reserved


@dataclass(frozen=True, slots=True)
class WorkerPod:
    """One worker pod as the ReplicaSet controller ranks it (not being deleted)."""

    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    assigned: bool = True
    phase: str = "Running"
    ready: bool = True
    # Seconds from its creation to Ready (the warm-up's lead, autoscale/waves.py); None
    # while not ready, or after a restart of its worker (not a start); and when it was
    # created.
    start_seconds: float | None = None
    created: datetime.datetime | None = None

    @property
    def ended(self) -> bool:
        """Evicted or finished: not one of the ReplicaSet's replicas any more, and no
        worker runs in it."""
        return self.phase in _ENDED

    @property
    def rank(self) -> tuple[bool, int, bool]:
        """The controller's first three criteria; lower is removed first."""
        return self.assigned, _PHASE_RANK.get(self.phase, -1), self.ready


@dataclass(frozen=True, slots=True)
class Draining:
    """A worker told to stop consuming, and until when the operator waits for it."""

    pod: str
    started: float
    deadline: float


@dataclass(frozen=True, slots=True)
class DrainRecord:
    """What a pod's drain annotation says: when the drain started (wall clock, seconds
    since the epoch; None for a mark that did not say) and the queues its worker was told
    to stop consuming, the ones to give it back."""

    since: float | None
    queues: tuple[str, ...]

    def encode(self) -> str:
        return json.dumps({"since": self.since, "queues": list(self.queues)},
                          separators=(",", ":"))

    @classmethod
    def decode(cls, text: str, queues: Sequence[str]) -> DrainRecord:
        """The record in ``text``; a value that is not one (the earlier ``"true"`` mark,
        anything written by hand) is a drain of the pool's ``queues`` of unknown age."""
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            return cls(None, tuple(queues))
        since = found.get("since")
        listed = found.get("queues")
        named = tuple(q for q in listed if isinstance(q, str) and q) if isinstance(
            listed, list) else ()
        if isinstance(since, bool) or not isinstance(since, int | float):
            since = None
        return cls(None if since is None else float(since), named or tuple(queues))

    def remaining(self, timeout: float, wall: float) -> float:
        """How much of ``timeout`` the drain has left at ``wall``: all of it when its start
        is unknown or ahead of this clock, none once spent."""
        if self.since is None:
            return timeout
        return min(timeout, max(0.0, timeout - (wall - self.since)))


@dataclass(frozen=True, slots=True)
class Review:
    """Where a pool's drains stand after one look at the workers."""

    drained: tuple[str, ...] = ()           # hold nothing: may be removed now
    timed_out: tuple[Draining, ...] = ()    # still busy at their deadline: consume again
    waiting: tuple[Draining, ...] = ()      # still busy, still within their time


def drain_timeout(grace_seconds: int) -> float:
    """How long a drain may take: the pool's termination grace period, the time its pod
    would have had to finish its work had it been deleted at once. Past it the operator
    keeps the worker rather than cut its task off."""
    return float(grace_seconds)


def hostname(pool: str, pod: str) -> str:
    """The Celery hostname of a pool's worker in ``pod`` (``--hostname <pool>@<pod>``)."""
    return f"{pool}@{pod}"


def pick(pods: Sequence[WorkerPod], loads: Mapping[str, Load], count: int) -> list[str]:
    """``count`` pods to retire: idle workers first, then the least loaded (tasks to wait
    for first, ETA tasks to give back second), then those that did not answer (maybe
    busy). Among pods that hold the same, those the ReplicaSet controller removes first (a
    pod not started, not ready), so that lowering the replicas removes exactly them:
    retiring running workers while a pod that cannot start stays would leave the pool with
    no consumer. Then by name, so the choice is stable."""
    def order(pod: WorkerPod) -> tuple[int, int, int, tuple[bool, int, bool], str]:
        load = loads.get(pod.name)
        if load is None:
            return 1, 0, 0, pod.rank, pod.name
        return 0, load.running, load.scheduled, pod.rank, pod.name
    return [pod.name for pod in sorted(pods, key=order)[:max(0, count)]]


def review(drains: Sequence[Draining], loads: Mapping[str, Load], now: float) -> Review:
    """Sort the drains by the workers' answers: a worker that runs nothing is drained (its
    ETA tasks go back to the broker when it stops); a silent one is not assumed idle."""
    drained, timed_out, waiting = [], [], []
    for drain in drains:
        load = loads.get(drain.pod)
        if load is not None and load.running == 0:
            drained.append(drain.pod)
        elif now >= drain.deadline:
            timed_out.append(drain)
        else:
            waiting.append(drain)
    return Review(tuple(drained), tuple(timed_out), tuple(waiting))


def exact_removal(pods: Sequence[WorkerPod], remove: Sequence[str], replicas: int
                  ) -> str | None:
    """Why lowering the Deployment by ``len(remove)`` might remove other pods than
    ``remove`` (None: it removes exactly those, given the lowest deletion cost).

    Holds when the pods are the Deployment's ``replicas`` and of one ReplicaSet (during a
    rollout the Deployment controller splits a scale-down between ReplicaSets), and no pod
    to remove ranks above a pod that stays on the criteria before the cost. Pods that ended
    (evicted: phase Failed) are not counted, as the ReplicaSet controller does not count
    them: it has started their replacements.
    """
    pods = [pod for pod in pods if not pod.ended]
    gone = set(remove) - {pod.name for pod in pods}
    if gone:
        return f"pods {', '.join(sorted(gone))} are gone already"
    if len(pods) != replicas:
        return f"{len(pods)} pods for {replicas} replicas: a pod is starting or stopping"
    if len({pod.labels.get(TEMPLATE_HASH) for pod in pods}) > 1:
        return "a rollout is under way (pods of more than one ReplicaSet)"
    leaving = [pod for pod in pods if pod.name in remove]
    staying = [pod for pod in pods if pod.name not in remove]
    if leaving and staying and max(p.rank for p in leaving) > min(p.rank for p in staying):
        lowest = min(staying, key=lambda p: p.rank)
        return (f"pod {lowest.name} (phase {lowest.phase}, ready {lowest.ready}) would be "
                "removed before a drained pod")
    return None
