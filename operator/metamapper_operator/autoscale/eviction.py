"""Which worker pods node autoscalers must leave alone: those running a task.

The Cluster Autoscaler and Karpenter consolidate nodes by evicting their pods; a
PodDisruptionBudget bounds how many go at once, and pod-deletion-cost only orders a
ReplicaSet's own scale-down, so neither keeps a running inspection alive. The operator
marks each pod whose worker reports a running task with both autoscalers' annotations and
removes them once the worker reports none. A worker that does not answer keeps the marks
it has (it may be busy). Only a worker that can answer is asked (:func:`can_answer`).
Pure: the autoscaling loop asks the workers and patches the pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from metamapper_operator.autoscale.drainplan import WorkerPod

NOT_SAFE_TO_EVICT: Mapping[str, str] = {
    "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
    "karpenter.sh/do-not-disrupt": "true",
}


def carries_marks(annotations: Mapping[str, str]) -> bool:
    """Whether a pod carries the operator's not-safe-to-evict marks."""
    return all(annotations.get(k) == v for k, v in NOT_SAFE_TO_EVICT.items())


@dataclass(frozen=True, slots=True)
class Marks:
    """The annotation patches to send, by pod, and the pods marked once they are sent."""

    patches: Mapping[str, Mapping[str, str | None]]
    marked: frozenset[str]


def eviction_marks(pods: Mapping[str, Mapping[str, str]], active: Mapping[str, int]) -> Marks:
    """Patches that mark the busy pods and unmark the idle ones; silent pods keep theirs."""
    patches: dict[str, Mapping[str, str | None]] = {}
    now_marked = set()
    for pod, current in pods.items():
        if pod not in active:
            busy = carries_marks(current)
        else:
            busy = active[pod] > 0
            if busy and not carries_marks(current):
                patches[pod] = dict(NOT_SAFE_TO_EVICT)
            elif not busy and any(k in current for k in NOT_SAFE_TO_EVICT):
                patches[pod] = dict.fromkeys(NOT_SAFE_TO_EVICT)
        if busy:
            now_marked.add(pod)
    return Marks(patches, frozenset(now_marked))


def can_answer(pod: WorkerPod) -> bool:
    """Whether the pod's worker can answer a broadcast: running and ready (consuming,
    its probe says). A pod pending, starting or crash-looping cannot, and asking it
    costs the whole reply timeout."""
    return pod.phase == "Running" and pod.ready


def worth_asking(replicas: int, busy_queues: Iterable[bool], known_marked: frozenset[str] | None
                 ) -> bool:
    """Whether to ask a pool's workers what they run this cycle.

    Only when the pool has pods and either a queue may hold work for them (waiting or
    unacknowledged messages, or a count the broker cannot tell) or some pod may carry
    marks to remove (``known_marked`` is None after a restart: not known).
    """
    if replicas <= 0:
        return False
    return known_marked is None or bool(known_marked) or any(busy_queues)
