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
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

POOL = ("namespace", "metamapper", "pool")
QUEUE = (*POOL, "queue")
BROKER = ("transport", "broker")


class ScaleReason(StrEnum):
    """Why the autoscaler resized a pool: the bounded ``reason`` label of scale events."""

    BACKLOG = "backlog"                    # the backlog asks for more (or fewer) pods
    IDLE = "idle"                          # no backlog above activation: down to min
    BROKER_UNREACHABLE = "broker_unreachable"  # held, or raised to fallbackReplicas


scale_events = Counter("metamapper_scale_events_total", "Pool size changes by the autoscaler",
                       (*POOL, "direction", "reason"))
broker_up = Gauge("metamapper_broker_up", "1 when the last measurement of a broker succeeded",
                  BROKER)
probe_seconds = Histogram("metamapper_probe_duration_seconds",
                          "Time to measure every queue of one broker", BROKER,
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
probe_errors = Counter("metamapper_probe_errors_total", "Failed broker measurements", BROKER)
cycle_seconds = Histogram("metamapper_autoscale_cycle_seconds",
                          "Time for one autoscaling cycle over every broker",
                          buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

PER_BROKER: tuple[MetricWrapperBase, ...] = (broker_up, probe_seconds, probe_errors)


@dataclass(frozen=True, slots=True)
class PoolSeries:
    """One pool's identity in metric labels."""

    namespace: str
    metamapper: str
    pool: str

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> PoolSeries:
        return cls(labels.get("namespace", ""), labels.get("metamapper", ""),
                   labels.get("pool", ""))


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """One queue's gauges as a pool reads it; None: the broker does not tell (no sample)."""

    waiting: int
    in_flight: int | None
    oldest_age: float | None


@dataclass(frozen=True, slots=True)
class PoolFigures:
    """One pool's gauges; ``backlog`` None: never measured (no sample)."""

    desired: int
    current: int
    min_replicas: int
    max_replicas: int
    backlog: int | None
    queues: Mapping[str, QueueFigures]


# The gauges of every pool and queue: (name, help, labels, value of a pool, or of a queue).
POOL_GAUGES: tuple[tuple[str, str, Callable[[PoolFigures], float | None]], ...] = (
    ("metamapper_pool_backlog", "Messages waiting (and in flight) on a pool's queues",
     lambda f: f.backlog),
    ("metamapper_pool_desired_replicas", "Pods the autoscaler wants for a pool",
     lambda f: f.desired),
    ("metamapper_pool_current_replicas", "Pods a pool's Deployment asks for",
     lambda f: f.current),
    ("metamapper_pool_min_replicas", "A pool's minReplicas", lambda f: f.min_replicas),
    ("metamapper_pool_max_replicas", "A pool's maxReplicas", lambda f: f.max_replicas),
)
QUEUE_GAUGES: tuple[tuple[str, str, Callable[[QueueFigures], float | None]], ...] = (
    ("metamapper_queue_messages_waiting", "Messages ready for delivery on a queue",
     lambda q: q.waiting),
    ("metamapper_queue_messages_in_flight", "Messages delivered to a worker, not yet "
     "acknowledged (where the broker tells)", lambda q: q.in_flight),
    ("metamapper_queue_oldest_message_age_seconds", "Age of a queue's oldest waiting "
     "message (where the broker tells; 0 when the queue is empty)", lambda q: q.oldest_age),
)


class PoolTable(Collector):
    """The per-pool and per-queue gauges, kept as one record per pool and rendered when
    scraped. A prometheus_client child per series costs about 1 KB, a pool about ten of
    them: 170 MB at 10,000 objects of two pools, against a few hundred bytes a pool here.
    Records are replaced whole, never changed, so a scrape (in the server's thread) reads
    a consistent snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str], dict[str, PoolFigures]] = {}

    def get(self, series: PoolSeries) -> PoolFigures | None:
        return self._pools.get((series.namespace, series.metamapper), {}).get(series.pool)

    def record(self, series: PoolSeries, figures: PoolFigures) -> None:
        with self._lock:
            self._pools.setdefault((series.namespace, series.metamapper), {})[
                series.pool] = figures

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._pools.pop((namespace, name), None)

    def retain(self, pools: Mapping[PoolSeries, Collection[str]]) -> None:
        """Keep the pools given, with the queues given of each; drop the rest."""
        with self._lock:
            kept: dict[tuple[str, str], dict[str, PoolFigures]] = {}
            for owner, of_owner in self._pools.items():
                for pool, figures in of_owner.items():
                    queues = pools.get(PoolSeries(*owner, pool))
                    if queues is None:
                        continue
                    if not set(figures.queues) <= set(queues):
                        figures = replace(figures, queues={
                            q: f for q, f in figures.queues.items() if q in queues})
                    kept.setdefault(owner, {})[pool] = figures
            self._pools = kept

    def _snapshot(self) -> list[tuple[tuple[str, str, str], PoolFigures]]:
        with self._lock:
            return [((*owner, pool), figures) for owner, of_owner in self._pools.items()
                    for pool, figures in of_owner.items()]

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        return self._families(self._snapshot())

    @staticmethod
    def _families(rows: list[tuple[tuple[str, str, str], PoolFigures]]) -> Iterator[Metric]:
        """The families one at a time: a scrape renders each before the next is built,
        so only one family's samples (a labels dict each) are alive at once, not all of
        them (86 MB at 10,000 objects of two pools)."""
        for name, help_text, value_of in POOL_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=POOL)
            for labels, figures in rows:
                if (value := value_of(figures)) is not None:
                    family.add_metric(labels, value)
            yield family
        for name, help_text, queue_value in QUEUE_GAUGES:
            family = GaugeMetricFamily(name, help_text, labels=QUEUE)
            for labels, figures in rows:
                for queue, of_queue in figures.queues.items():
                    if (value := queue_value(of_queue)) is not None:
                        family.add_metric((*labels, queue), value)
            yield family


pool_table = PoolTable()
REGISTRY.register(pool_table)


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
    pool_table.forget(namespace, name)
    _remove_where((scale_events,), lambda labels: (
        labels.get("namespace"), labels.get("metamapper")) == (namespace, name))


def retain(pools: Mapping[PoolSeries, Collection[str]],
           brokers: Collection[tuple[str, str]]) -> None:
    """Keep the series of the pools (with their queues) and brokers given; remove the rest:
    pools no longer autoscaled, queues a pool no longer reads, brokers no pool uses."""
    pool_table.retain(pools)
    _remove_where((scale_events,), lambda labels: PoolSeries.of(labels) not in pools)
    _remove_where(PER_BROKER, lambda labels: (labels.get("transport"),
                                              labels.get("broker")) not in brokers)
