"""KEDA's Redis scaler behind the HPA's default behaviour, as a model that scales a
Deployment: what a KEDA user gets, for the benchmarks to compare with.

KEDA's Redis scaler reports ``listLength`` (the queue's list only: no in-flight messages,
no priority lists); its metrics server asks the scaler on each of the HPA's requests (KEDA's
30 s ``pollingInterval`` drives only activation from and to zero, which minReplicas 1
never uses). The HPA, every 15 s (kube-controller-manager's sync period), for an
``AverageValue`` target: ``ceil(length / target)`` unless within the 0.1 tolerance,
clamped to [min, max]; a scale-up limited to max(100 %, 4 pods) per 15 s, no window; a
scale-down to the highest recommendation of the last 300 s (the default window; the
benchmarks can give another). Scale-down is plain: the Deployment's replicas are lowered
and the ReplicaSet controller picks which pods go.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from _common import Cluster

SYNC_SECONDS = 15.0   # --horizontal-pod-autoscaler-sync-period


@dataclass(frozen=True)
class Behaviour:
    target: int                       # AverageValue per pod
    min_replicas: int
    max_replicas: int
    down_window_seconds: float = 300.0
    tolerance: float = 0.1


@dataclass
class Hpa:
    """The HPA's decision, one sync at a time."""

    behaviour: Behaviour
    history: list[tuple[float, int]] = field(default_factory=list)  # (time, recommendation)

    def step(self, current: int, length: int, now: float) -> int:
        b = self.behaviour
        ratio = length / (b.target * current) if current else math.inf
        recommendation = current if abs(ratio - 1) <= b.tolerance else math.ceil(length / b.target)
        recommendation = max(b.min_replicas, min(b.max_replicas, recommendation))
        self.history = [(t, r) for t, r in self.history if t >= now - b.down_window_seconds]
        self.history.append((now, recommendation))
        desired = current
        if recommendation > current:    # no window; max(100 %, 4 pods) per period
            desired = min(recommendation, max(2 * current, current + 4))
        elif recommendation < current:  # the window's highest recommendation
            desired = min(current, max(r for _, r in self.history))
        return max(b.min_replicas, min(b.max_replicas, desired))


class HpaModel:
    """A thread that sets ``deployment``'s scale from ``queue``'s length every sync."""

    def __init__(self, kube: Cluster, namespace: str, deployment: str, broker: str,
                 queue: str, behaviour: Behaviour) -> None:
        self._kube, self._namespace, self._deployment = kube, namespace, deployment
        self._broker, self._queue, self._hpa = broker, queue, Hpa(behaviour)
        self._current = behaviour.min_replicas
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = redis.Redis.from_url(self._broker)
        try:
            while not self._stopping.wait(SYNC_SECONDS):
                desired = self._hpa.step(self._current, int(client.llen(self._queue)),
                                         time.monotonic())
                if desired != self._current:
                    self._kube.kubectl("scale", "-n", self._namespace, "deployment",
                                       self._deployment, f"--replicas={desired}")
                    self._current = desired
        finally:
            client.close()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()


@contextmanager
def hpa_model(kube: Cluster, namespace: str, deployment: str, broker: str, queue: str,
              behaviour: Behaviour) -> Iterator[HpaModel]:
    """The model running from now until the context ends."""
    model = HpaModel(kube, namespace, deployment, broker, queue, behaviour)
    try:
        yield model
    finally:
        model.close()
