"""Prometheus metrics, served on /metrics by the operator process.

Per pool and per queue, series carry the Metamapper's namespace and name, the pool and
the queue; per broker, the transport and the broker's address without credentials
(``host:port``, see :func:`broker_label`). No label holds a URL, a password or a key.
Series of a pool that is no longer autoscaled (its Metamapper deleted, the pool removed,
autoscaling turned off, the fleet suspended) are removed (:func:`forget`, :func:`retain`),
so nothing outlives what it describes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

POOL = ("namespace", "metamapper", "pool")
QUEUE = (*POOL, "queue")
BROKER = ("transport", "broker")


class ScaleReason(StrEnum):
    """Why the autoscaler resized a pool: the bounded ``reason`` label of scale events."""

    BACKLOG = "backlog"                    # the backlog asks for more (or fewer) pods
    IDLE = "idle"                          # no backlog above activation: down to min
    BROKER_UNREACHABLE = "broker_unreachable"  # held, or raised to fallbackReplicas


backlog = Gauge("metamapper_pool_backlog", "Messages waiting (and in flight) on a pool's queues",
                POOL)
desired_replicas = Gauge("metamapper_pool_desired_replicas",
                         "Pods the autoscaler wants for a pool", POOL)
current_replicas = Gauge("metamapper_pool_current_replicas",
                         "Pods a pool's Deployment asks for", POOL)
min_replicas = Gauge("metamapper_pool_min_replicas", "A pool's minReplicas", POOL)
max_replicas = Gauge("metamapper_pool_max_replicas", "A pool's maxReplicas", POOL)
scale_events = Counter("metamapper_scale_events_total", "Pool size changes by the autoscaler",
                       (*POOL, "direction", "reason"))
queue_waiting = Gauge("metamapper_queue_messages_waiting",
                      "Messages ready for delivery on a queue", QUEUE)
queue_in_flight = Gauge("metamapper_queue_messages_in_flight",
                        "Messages delivered to a worker, not yet acknowledged (where the "
                        "broker tells)", QUEUE)
queue_oldest_age = Gauge("metamapper_queue_oldest_message_age_seconds",
                         "Age of a queue's oldest waiting message (where the broker tells; "
                         "0 when the queue is empty)", QUEUE)
broker_up = Gauge("metamapper_broker_up", "1 when the last measurement of a broker succeeded",
                  BROKER)
probe_seconds = Histogram("metamapper_probe_duration_seconds",
                          "Time to measure every queue of one broker", BROKER,
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
probe_errors = Counter("metamapper_probe_errors_total", "Failed broker measurements", BROKER)
cycle_seconds = Histogram("metamapper_autoscale_cycle_seconds",
                          "Time for one autoscaling cycle over every broker",
                          buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

PER_POOL: tuple[MetricWrapperBase, ...] = (
    backlog, desired_replicas, current_replicas, min_replicas, max_replicas, scale_events)
PER_QUEUE: tuple[MetricWrapperBase, ...] = (queue_waiting, queue_in_flight, queue_oldest_age)
PER_BROKER: tuple[MetricWrapperBase, ...] = (broker_up, probe_seconds, probe_errors)


@dataclass(frozen=True)
class PoolSeries:
    """One pool's identity in metric labels."""

    namespace: str
    metamapper: str
    pool: str

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> PoolSeries:
        return cls(labels.get("namespace", ""), labels.get("metamapper", ""),
                   labels.get("pool", ""))


def broker_label(display: str) -> str:
    """A broker's label: its redacted address without the user part (``host:port/...``)."""
    return display.rpartition("@")[2]


def _remove_where(metrics: Iterable[MetricWrapperBase],
                  drop: Callable[[Mapping[str, str]], bool]) -> None:
    """Remove every series of ``metrics`` whose labels ``drop`` is true for.

    The series are read from the metric's children, not from ``collect()``: that renders
    every sample (a histogram's buckets too), which at 100,000 series costs seconds.
    prometheus_client has no public listing of a metric's label values.
    """
    for metric in metrics:
        names = metric._labelnames
        with metric._lock:
            series = list(metric._metrics)
        for values in series:
            if drop(dict(zip(names, values, strict=True))):
                with contextlib.suppress(KeyError):   # removed meanwhile
                    metric.remove(*values)


def forget(namespace: str, name: str) -> None:
    """Remove every series of one Metamapper (it was deleted): no series outlives it."""
    _remove_where((*PER_POOL, *PER_QUEUE), lambda labels: (
        labels.get("namespace"), labels.get("metamapper")) == (namespace, name))


def retain(pools: Mapping[PoolSeries, Collection[str]],
           brokers: Collection[tuple[str, str]]) -> None:
    """Keep the series of the pools (with their queues) and brokers given; remove the rest:
    pools no longer autoscaled, queues a pool no longer reads, brokers no pool uses."""
    _remove_where(PER_POOL, lambda labels: PoolSeries.of(labels) not in pools)
    _remove_where(PER_QUEUE, lambda labels: labels.get("queue") not in pools.get(
        PoolSeries.of(labels), ()))
    _remove_where(PER_BROKER, lambda labels: (labels.get("transport"),
                                              labels.get("broker")) not in brokers)
