"""Replay one bursty trace three ways side by side: our defaults, KEDA-like, a fixed fleet.

The trace (``bench/bursty-trace.csv``: rows ``offset_seconds,tasks,task_seconds``) is sent
from one clock to three Metamappers, each in a namespace of its own with its own Redis
database, all on one local control plane with a real node (kubelet, containerd) that runs
every pod as a real ``celery worker`` in a container of the workload image (the worker
image plus the tasks of ``devenv.workload``, which record when each task started and
finished). The operators run as local processes, one per polling interval. One pool each:
concurrency 2, minReplicas 1 (KEDA's default is 0), maxReplicas 4, target backlog 2 per pod:

* **our defaults**: the CRD's defaults (polling 5 s, scale-down window 300 s, tolerance
  0.1, in-flight messages counted);
* **KEDA-like**: the same operator configured like KEDA's defaults with an HPA: polling
  30 s (an operator process of its own), window 300 s, tolerance 0.1, and the queue's
  length only (KEDA's Redis scaler does not count in-flight messages). The HPA's own 15 s
  sync period and its scale-up rate policy are not modelled: the real thing reacts later.
  So it differs from our defaults only in the polling and in not counting in-flight
  messages;
* **fixed at max**: autoscaling off, 4 pods all the time.

Every figure is taken over the same horizon: from the trace's start to its last row plus
``--tail`` seconds (330 by default, so the 300 s windows can shrink both autoscaled pools
before the end). Queue wait = the task's first ``started`` record - the time it was sent;
worker-seconds = the integral of the Deployment's ``status.readyReplicas`` (from a
``kubectl get --watch``: every change, as it happens) over the horizon; peak = the most
ready pods; lost = sent - done at the horizon's end.

Usage::

    python bench/trace_replay.py [--trace bench/bursty-trace.csv] [--tail 330]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any

from celery import Celery

from _common import (
    Cluster,
    cluster,
    metamapper,
    namespace_manifest,
    operator,
    percentile,
    print_table,
    redis_server,
    say,
)
from devenv.waiting import wait_until
from devenv.workload import MODULE, TASK, records, tally

TRACE = Path(__file__).with_name("bursty-trace.csv")
NAME = "replay"
POOL = "default"
CONCURRENCY = 2
MAX_REPLICAS = 4
PROGRESS_SECONDS = 15.0


@dataclass(frozen=True)
class Config:
    label: str
    namespace: str
    poll_seconds: float
    min_replicas: int
    autoscaling: dict[str, Any]


CONFIGS = (
    Config("our defaults", "replay-ours", 5.0, 1, {}),
    Config("KEDA-like", "replay-keda", 30.0, 1,
           {"scaleDownStabilizationSeconds": 300, "tolerance": 0.1, "countInFlight": False}),
    Config("fixed at max", "replay-fixed", 5.0, MAX_REPLICAS, {"enabled": False}),
)


@dataclass(frozen=True)
class Row:
    """``tasks`` tasks of ``seconds`` each, sent ``offset`` seconds into the trace."""

    offset: float
    tasks: int
    seconds: float


def read_trace(path: Path) -> list[Row]:
    with path.open(newline="") as rows:
        trace = [Row(float(r["offset_seconds"]), int(r["tasks"]), float(r["task_seconds"]))
                 for r in csv.DictReader(rows)]
    if not trace or any(a.offset > b.offset for a, b in pairwise(trace)):
        raise SystemExit(f"{path}: expected rows in the order of their offsets")
    return trace


class ReadyWatch:
    """Every Deployment's ``status.readyReplicas``, per namespace, timed on arrival."""

    def __init__(self, kube: Cluster) -> None:
        self._proc = kube.popen_kubectl(
            "get", "deployments", "--all-namespaces", "--watch", "-o",
            'jsonpath={.metadata.namespace} {.status.readyReplicas}{"\\n"}')
        self._lock = threading.Lock()
        self._changes: dict[str, list[tuple[float, int]]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            namespace, _, ready = line.strip().partition(" ")
            if namespace:
                with self._lock:
                    self._changes.setdefault(namespace, []).append(
                        (time.monotonic(), int(ready or 0)))

    def changes(self, namespace: str) -> list[tuple[float, int]]:
        with self._lock:
            return list(self._changes.get(namespace, []))

    def ready(self, namespace: str) -> int:
        changes = self.changes(namespace)
        return changes[-1][1] if changes else 0

    def usage(self, namespace: str, start: float, end: float) -> tuple[float, int]:
        """Worker-seconds and the peak of ready pods within [start, end)."""
        level, since, area, peak = 0, start, 0.0, 0
        for at, ready in self.changes(namespace):
            if at >= end:
                break
            if at > start:
                area += level * (at - since)
                peak, since = max(peak, level), at
            level = ready
        return area + level * (end - since), max(peak, level)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()


@contextmanager
def ready_watch(kube: Cluster) -> Iterator[ReadyWatch]:
    watch = ReadyWatch(kube)
    try:
        yield watch
    finally:
        watch.close()


@dataclass
class Fleet:
    """One configuration's Metamapper, its producer and what it was sent (wall-clock)."""

    config: Config
    broker: str     # its Redis database also keeps the tasks' records
    image: str
    app: Celery = field(init=False)
    sent: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.app = Celery(self.config.namespace, broker=self.broker, set_as_current=False)

    def manifest(self) -> dict[str, Any]:
        pool = {"name": POOL, "queues": [POOL], "concurrency": CONCURRENCY,
                "minReplicas": self.config.min_replicas, "maxReplicas": MAX_REPLICAS,
                "autoscaling": {"targetBacklogPerReplica": CONCURRENCY,
                                **self.config.autoscaling}}
        body = metamapper(self.config.namespace, NAME, self.broker, [pool])
        body["spec"]["image"] = self.image
        body["spec"]["celery"] = {"settings": {"imports": [MODULE]}}
        return body

    def send(self, seconds: float) -> None:
        task_id = uuid.uuid4().hex
        self.app.send_task(TASK, args=[task_id, seconds, self.broker], queue=POOL)
        self.sent[task_id] = time.time()

    def waits(self) -> list[float]:
        """Seconds from sending to starting, of every task that started."""
        return [started[0].at - at for task_id, at in self.sent.items()
                if (started := records(self.broker, "started", task_id))]


def replay(trace: Sequence[Row], fleets: Sequence[Fleet], watch: ReadyWatch, horizon: float
           ) -> float:
    """Send the trace to every fleet from one clock and wait out the horizon; return the
    trace's start (monotonic)."""
    start = time.monotonic()
    end, next_line, pending = start + horizon, start, list(trace)
    while (now := time.monotonic()) < end:
        while pending and start + pending[0].offset <= now:
            row = pending.pop(0)
            for _ in range(row.tasks):
                for fleet in fleets:
                    fleet.send(row.seconds)
        if now >= next_line:
            say(f"  {now - start:5.0f} s  " + " | ".join(
                f"{f.config.label}: {watch.ready(f.config.namespace)} ready, "
                f"{tally(f.broker, list(f.sent)).done}/{len(f.sent)} done" for f in fleets))
            next_line += PROGRESS_SECONDS
        wake = min(next_line, end, *(start + row.offset for row in pending[:1]))
        time.sleep(max(0.0, min(1.0, wake - time.monotonic())))
    return start


def leftovers(root: Path) -> list[str]:
    """Processes whose command line or working folder lies under ``root``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(root) in argv or Path(cwd).is_relative_to(root):
            found.append(f"{proc.name}: {argv.strip()[:120]}")
    return found


def print_trace(trace: Sequence[Row], horizon: float) -> None:
    print(f"\ntrace: {sum(r.tasks for r in trace)} tasks, "
          f"{sum(r.tasks * r.seconds for r in trace):.0f} task-seconds, last row at "
          f"{trace[-1].offset:g} s; horizon {horizon:g} s")
    print_table(["offset s", "tasks", "task s", "work task-s"],
                [[f"{r.offset:g}", r.tasks, f"{r.seconds:g}", f"{r.tasks * r.seconds:g}"]
                 for r in trace])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, default=TRACE, help="the trace (CSV)")
    parser.add_argument("--tail", type=float, default=330.0,
                        help="seconds measured after the trace's last row")
    args = parser.parse_args(argv)
    trace = read_trace(args.trace)
    horizon = trace[-1].offset + args.tail

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        with ExitStack() as stack:
            kube = stack.enter_context(cluster(root / "cluster", node=True))
            assert kube.images is not None
            redis_url = stack.enter_context(redis_server(root / "redis"))
            fleets = [Fleet(config, f"{redis_url.removesuffix('/0')}/{db}",
                            kube.images.workload) for db, config in enumerate(CONFIGS)]
            kube.apply([namespace_manifest(c.namespace) for c in CONFIGS])
            by_poll = sorted(CONFIGS, key=lambda c: c.poll_seconds)
            for poll, group in groupby(by_poll, key=lambda c: c.poll_seconds):
                namespaces = [arg for c in group for arg in ("--namespace", c.namespace)]
                stack.enter_context(operator(kube, root / f"operator-{poll:g}s.log",
                                             "--poll-interval", f"{poll:g}", *namespaces))
            watch = stack.enter_context(ready_watch(kube))
            for fleet in fleets:
                stack.enter_context(fleet.app)
            kube.apply([fleet.manifest() for fleet in fleets])
            say("waiting for every pool at its minimum ...")
            wait_until(lambda: all(watch.ready(f.config.namespace) == f.config.min_replicas
                                   for f in fleets), 180, "the pools at their minimum", 0.5)
            say(f"replaying {args.trace.name} for {horizon:g} s ...")
            start = replay(trace, fleets, watch, horizon)
            rows = []
            for fleet in fleets:
                result = tally(fleet.broker, list(fleet.sent))
                waits = fleet.waits()
                used, peak = watch.usage(fleet.config.namespace, start, start + horizon)
                rows.append([fleet.config.label, result.sent,
                             *(f"{percentile(waits, q):.1f}" if waits else "-" for q in (50, 95)),
                             f"{used:.0f}", peak, result.lost])
        left = leftovers(root)

    print_trace(trace, horizon)
    print(f"\nthe trace sent to each configuration side by side; figures over {horizon:g} s "
          f"(last row + {args.tail:g} s tail)")
    print_table(["configuration", "tasks", "p50 wait s", "p95 wait s", "worker-s",
                 "peak workers", "lost"], rows)
    if left:
        raise SystemExit("processes left behind:\n" + "\n".join(left))


if __name__ == "__main__":
    main()
