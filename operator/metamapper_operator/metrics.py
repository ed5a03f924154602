"""Prometheus metrics, served on /metrics by the operator process."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

POOL = ("namespace", "metamapper", "pool")
BROKER = ("transport", "broker")

backlog = Gauge("metamapper_pool_backlog", "Messages waiting (and in flight) on a pool's queues",
                POOL)
desired_replicas = Gauge("metamapper_pool_desired_replicas",
                         "Pods the autoscaler wants for a pool", POOL)
current_replicas = Gauge("metamapper_pool_current_replicas",
                         "Pods a pool's Deployment asks for", POOL)
scale_events = Counter("metamapper_scale_events_total", "Pool size changes by the autoscaler",
                       (*POOL, "direction"))
probe_seconds = Histogram("metamapper_probe_duration_seconds",
                          "Time to measure every queue of one broker", BROKER,
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
probe_errors = Counter("metamapper_probe_errors_total", "Failed broker measurements", BROKER)
cycle_seconds = Histogram("metamapper_autoscale_cycle_seconds",
                          "Time for one autoscaling cycle over every broker",
                          buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def forget(namespace: str, name: str) -> None:
    """Remove every series of one Metamapper (it was deleted): no series outlives it."""
    for metric, labels in ((backlog, POOL), (desired_replicas, POOL), (current_replicas, POOL),
                           (scale_events, (*POOL, "direction"))):
        for family in metric.collect():
            for sample in family.samples:
                if (sample.labels.get("namespace"), sample.labels.get("metamapper")) == (
                        namespace, name):
                    with contextlib.suppress(KeyError):  # a counter's _total and _created
                        metric.remove(*(sample.labels[label] for label in labels))
