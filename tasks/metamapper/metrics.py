"""Task metrics of a worker, served in Prometheus' text format on a port of its pod.

The names follow celery-exporter's (``celery_task_received_total``, ...,
``celery_task_runtime``, ``celery_worker_up``), so dashboards built for it read these
too; what it has no name for is ``metamapper_``-prefixed. Labels carry task names, the
worker's hostname and queue names, never arguments or broker URLs.

Under Celery's prefork pool tasks run in child processes, while the main process
receives messages and serves the port. With ``PROMETHEUS_MULTIPROC_DIR`` set (the
operator sets it, on the pod's writable ``/tmp``) every process writes its values to
files there and the port serves their sum (prometheus_client's multiprocess mode); the
main process empties the directory when the worker starts, so values of an earlier
container in the same pod are not added. Without it (a solo worker, a shell), values
live in the process.

Queue wait needs the time a task was sent: :func:`stamp_publish_time` adds it as the
message header ``published_at`` (seconds since the epoch) to every task this app
publishes. The operator reads the same header to tell the age of a Redis queue's oldest
message; on AMQP it is also set as the message's ``timestamp`` property, which
RabbitMQ's management API shows as the queue's ``head_message_timestamp``.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from celery import signals
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

PORT_ENV = "METAMAPPER_METRICS_PORT"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PUBLISHED_AT = "published_at"

TASK = ("name", "hostname", "queue_name")
# Seconds: tasks run from milliseconds (heartbeat) to the 20-minute time limit.
RUNTIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200)
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

sent = Counter("celery_task_sent_total", "Tasks sent by this worker's tasks",
               ("name", "queue_name"))
received = Counter("celery_task_received_total", "Tasks received by the worker", TASK)
started = Counter("celery_task_started_total", "Tasks started", TASK)
succeeded = Counter("celery_task_succeeded_total", "Tasks that succeeded", TASK)
failed = Counter("celery_task_failed_total", "Tasks that failed (raised)",
                 (*TASK, "exception"))
retried = Counter("celery_task_retried_total", "Tasks that asked to be retried", TASK)
retry_requeued = Counter("metamapper_task_retry_requeued_total",
                         "Retries the broker could not take, whose running message was "
                         "requeued (metamapper.retries)", ("name",))
runtime = Histogram("celery_task_runtime", "Seconds a task ran", TASK,
                    buckets=RUNTIME_BUCKETS)
queue_wait = Histogram("metamapper_task_queue_wait_seconds",
                       "Seconds from a task's publication to its start (tasks sent with "
                       "the published_at header)", TASK, buckets=WAIT_BUCKETS)
worker_up = Gauge("celery_worker_up", "1 while the worker runs, 0 once it shuts down",
                  ("hostname",), multiprocess_mode="max")
beat_tick = Gauge("metamapper_beat_last_tick_timestamp_seconds",
                  "When the beat's heartbeat task last ran (seconds since the epoch)",
                  ("hostname",), multiprocess_mode="max")

# task id -> when it started, in the child process running it.
_started_at: dict[str, float] = {}


def _queue(request: Any) -> str:
    delivery = getattr(request, "delivery_info", None) or {}
    return str(delivery.get("routing_key") or "")


def _labels(task: Any) -> tuple[str, str, str]:
    request = task.request
    return (task.name, str(request.hostname or ""), _queue(request))


@signals.before_task_publish.connect
def stamp_publish_time(sender: str | None = None, headers: dict[str, Any] | None = None,
                       properties: dict[str, Any] | None = None,
                       routing_key: str | None = None, **_: Any) -> None:
    """Add the publication time to the message; count the send."""
    now = time.time()
    if headers is not None:
        headers.setdefault(PUBLISHED_AT, now)
    if properties is not None:
        # AMQP's timestamp property (whole seconds), shown by RabbitMQ's management API.
        properties.setdefault("timestamp", int(now))
    sent.labels(str(sender or ""), str(routing_key or "")).inc()


@signals.task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    received.labels(request.name, str(request.hostname or ""), _queue(request)).inc()


@signals.task_prerun.connect
def _prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    now = time.time()
    labels = _labels(task)
    started.labels(*labels).inc()
    _started_at[task_id] = time.monotonic()
    published = getattr(task.request, PUBLISHED_AT, None)
    if isinstance(published, int | float) and not isinstance(published, bool):
        queue_wait.labels(*labels).observe(max(0.0, now - published))


@signals.task_postrun.connect
def _postrun(task_id: str = "", task: Any = None, **_: Any) -> None:
    began = _started_at.pop(task_id, None)
    if began is not None:
        runtime.labels(*_labels(task)).observe(time.monotonic() - began)


@signals.task_success.connect
def _success(sender: Any = None, **_: Any) -> None:
    succeeded.labels(*_labels(sender)).inc()


@signals.task_failure.connect
def _failure(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
    failed.labels(*_labels(sender), type(exception).__name__).inc()


@signals.task_retry.connect
def _retry(sender: Any = None, **_: Any) -> None:
    retried.labels(*_labels(sender)).inc()


def record_beat_tick(hostname: str) -> None:
    """Called by the heartbeat task: the beat scheduled it, so the beat is ticking."""
    beat_tick.labels(hostname).set(time.time())


def _multiproc_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


@signals.worker_init.connect
def _empty_multiproc_dir(**_: Any) -> None:
    """Start from an empty directory, before the pool's children write to it.

    Only labelled metrics exist in this module, so no process has opened a file yet.
    """
    directory = _multiproc_dir()
    if directory is None:
        return
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


class ReadableFilesCollector(Collector):
    """prometheus_client's sum of every process's values file, of the files it can read.

    A pool child killed between creating its file and sizing it (an OOM kill, a hard time
    limit) leaves the file empty for good, and the library's own collector then fails
    every scrape of the port, so every value of the worker is lost to Prometheus
    (prometheus/client_python#1199). A file that cannot be read holds nothing this worker
    can serve: it is left out and counted, and every other process's values are served.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        found = sorted(map(str, self.directory.glob("*.db")))
        try:
            merged, readable = _merged(found), found
        except UNREADABLE:
            # Each file is read alone only once the sum failed: a scrape reads it once.
            readable = [path for path in found if _readable(path)]
            merged = _merged(readable)
        yield from merged
        yield GaugeMetricFamily(
            "metamapper_metrics_unreadable_files",
            "Values files of this worker's processes that could not be read (left out)",
            value=len(found) - len(readable))


# What reading a values file raises when it is empty, cut short, or gone.
UNREADABLE = (OSError, RuntimeError, ValueError, struct.error)


def _merged(files: list[str]) -> Iterable[Metric]:
    return prometheus_multiprocess.MultiProcessCollector.merge(files, accumulate=True)


def _readable(path: str) -> bool:
    try:
        MmapedDict.read_all_values_from_file(path)
    except UNREADABLE:
        return False
    return True


def registry() -> CollectorRegistry:
    """What the port serves: every process's values summed, or this process's."""
    directory = _multiproc_dir()
    if directory is None:
        return REGISTRY
    collected = CollectorRegistry()
    collected.register(ReadableFilesCollector(directory))
    return collected


@signals.worker_ready.connect
def _serve(sender: Any = None, **_: Any) -> None:
    hostname = str(getattr(sender, "hostname", "") or "")
    worker_up.labels(hostname).set(1)
    port = os.environ.get(PORT_ENV)
    if port:
        start_http_server(int(port), registry=registry())


@signals.worker_shutdown.connect
def _down(sender: Any = None, **_: Any) -> None:
    worker_up.labels(str(getattr(sender, "hostname", "") or "")).set(0)
