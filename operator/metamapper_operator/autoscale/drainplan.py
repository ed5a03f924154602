"""Drain before delete, the decisions: which workers to retire, when a drain is done or has
taken too long, and when a scale-down removes exactly the drained pods. Pure; no I/O, no
clock (the caller passes the time).

A pool shrinks in three steps. The operator picks the pods to remove (idle workers first)
and tells their Celery workers to stop consuming the pool's queues; it waits until each
holds no task (running, prefetched or waiting for its ETA); then it gives exactly those
pods the lowest ``controller.kubernetes.io/pod-deletion-cost`` and lowers the
Deployment's replicas by their number. A drain still busy after its timeout (the pool's
termination grace period: the time a deleted pod would have had) is given up and the
worker consumes again: its task is never cut off.

The ReplicaSet controller ranks the pods it removes by, in order: unassigned before
assigned; Pending before Unknown before Running; not ready before ready; then the lower
deletion cost. A cost decides only among pods equal on the first three, so the drained
pods go first only when none of them ranks above any pod that stays
(:func:`exact_removal`); otherwise the scale-down waits for the next cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DRAINED_COST = -(2**31)   # the lowest cost there is: nothing ranks below a drained pod
TEMPLATE_HASH = "pod-template-hash"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True, slots=True)
class Load:
    """What one worker holds: tasks running, prefetched, and held for their ETA."""

    active: int = 0
    reserved: int = 0
    scheduled: int = 0

    @property
    def total(self) -> int:
        return self.active + self.reserved + self.scheduled


@dataclass(frozen=True, slots=True)
class WorkerPod:
    """One worker pod as the ReplicaSet controller ranks it (not being deleted)."""

    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    assigned: bool = True
    phase: str = "Running"
    ready: bool = True

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
    """``count`` pods to retire: idle workers first, then the least loaded, then those
    that did not answer (maybe busy). Among pods that hold the same, those the ReplicaSet
    controller removes first (a pod not started, not ready), so that lowering the
    replicas removes exactly them: retiring running workers while a pod that cannot
    start stays would leave the pool with no consumer. Then by name, so the choice is
    stable."""
    def order(pod: WorkerPod) -> tuple[int, int, tuple[bool, int, bool], str]:
        load = loads.get(pod.name)
        if load is None:
            return 1, 0, pod.rank, pod.name
        return 0, load.total, pod.rank, pod.name
    return [pod.name for pod in sorted(pods, key=order)[:max(0, count)]]


def review(drains: Sequence[Draining], loads: Mapping[str, Load], now: float) -> Review:
    """Sort the drains by the workers' answers: a worker that holds nothing is drained; a
    silent one is not assumed idle."""
    drained, timed_out, waiting = [], [], []
    for drain in drains:
        load = loads.get(drain.pod)
        if load is not None and load.total == 0:
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
    to remove ranks above a pod that stays on the criteria before the cost.
    """
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
