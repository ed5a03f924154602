"""Replay one bursty trace three ways side by side: our defaults, KEDA-like, a fixed fleet.

The trace (``bench/bursty-trace.csv``: rows ``offset_seconds,tasks,task_seconds``) is sent
from one clock to three Metamappers, each in a namespace of its own with its own Redis
database, all on one local control plane with a real node (kubelet, containerd) that runs
every pod as a real ``celery worker`` in a container of the workload image (the worker
image plus the tasks of ``devenv.workload``, which record when each task started and
finished). The operators run as local processes, one per polling interval. One pool each:
concurrency 2, minReplicas 1 (KEDA's default is 0), maxReplicas 8 (``--max-replicas``:
high enough that capacity is decided by each policy, not by the cap), target backlog 2 per
pod, each worker pod requesting 50m CPU (so that three pools of 8 fit the node and none
waits for room another holds). It also prints each trace row's longest wait per
configuration, to show where the waits come from.

* **our defaults**: the operator's and the CRD's defaults (the operator's polling interval
  or ``--poll``, in-flight messages counted, drain before delete; the scale-down window and
  tolerance as the CRD defaults them, or the window ``--window`` gives);
* **KEDA-like**: KEDA's Redis scaler with its defaults behind the HPA's defaults, as
  ``bench/_hpa.py`` models them (the queue's length only, read every 15 s; scale-up
  by max(100 %, 4 pods) per 15 s; scale-down to the highest recommendation of the last
  300 s, the ReplicaSet controller picking the pods). Its operator polls once a day, so
  only the model scales it;
* **fixed at max**: autoscaling off, the maximum all the time.

Every figure is taken over the same horizon: from the trace's start to its last row plus
``--tail`` seconds (330 by default, so the 300 s windows can shrink both autoscaled pools
before the end). Queue wait = the task's first ``started`` record - the time it was sent;
worker-seconds = the integral of the Deployment's ``status.readyReplicas`` (from a
``kubectl get --watch``: every change, as it happens) over the horizon; peak = the most
ready pods; lost = sent - done at the horizon's end.

It ends with one line comparing our defaults with KEDA-like: ``p95 wait vs KEDA-like:
X.XXx, worker-seconds vs KEDA-like: Y.YYx`` (the goal: at most 0.5x and 1.0x).

Usage::

    python bench/trace_replay.py [--trace bench/bursty-trace.csv] [--tail 330]
                                 [--max-replicas 8] [--window SECONDS] [--poll SECONDS]
"""

from __future__ import annotations

import argparse
import csv
import math
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
from _hpa import Behaviour, hpa_model
from devenv.pictures import Replay, replay_picture
from devenv.waiting import wait_until
from devenv.workload import MODULE, TASK, records, tally
from metamapper_operator.config import Config as OperatorConfig

TRACE = Path(__file__).with_name("bursty-trace.csv")
PICTURE = Path(__file__).resolve().parent.parent / "build" / "trace-replay.png"
NAME = "replay"
POOL = "default"
CONCURRENCY = 2
# Small enough that the three fleets at 8 pods each fit the 2-core node's allocatable CPU,
# so that no configuration's pods wait for room the others hold (the tasks sleep).
WORKER_REQUESTS = {"cpu": "50m", "memory": "128Mi"}
MAX_REPLICAS = 8
PROGRESS_SECONDS = 15.0
ONCE_A_DAY = 86400.0
OPERATOR_DEFAULTS = OperatorConfig()


@dataclass(frozen=True)
class Config:
    label: str
    namespace: str
    poll_seconds: float
    min_replicas: int
    autoscaling: dict[str, Any]
    hpa: bool = False   # scaled by the HPA model, not by its operator


def configs(max_replicas: int, window: float | None, poll: float) -> tuple[Config, ...]:
    """The three configurations; ``window`` replaces our default scale-down window, ``poll``
    is our operator's polling interval."""
    ours = {} if window is None else {"scaleDownStabilizationSeconds": window}
    return (
        Config("our defaults", "replay-ours", poll, 1, ours),
        Config("KEDA-like", "replay-keda", ONCE_A_DAY, 1, {}, hpa=True),
        Config("fixed at max", "replay-fixed", poll, max_replicas, {"enabled": False}),
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
    max_replicas: int
    app: Celery = field(init=False)
    sent: dict[str, float] = field(default_factory=dict)
    row_of: dict[str, int] = field(default_factory=dict)    # task id -> its trace row

    def __post_init__(self) -> None:
        self.app = Celery(self.config.namespace, broker=self.broker, set_as_current=False)

    def manifest(self) -> dict[str, Any]:
        pool = {"name": POOL, "queues": [POOL], "concurrency": CONCURRENCY,
                "minReplicas": self.config.min_replicas, "maxReplicas": self.max_replicas,
                "resources": {"requests": WORKER_REQUESTS},
                "autoscaling": {"targetBacklogPerReplica": CONCURRENCY,
                                **self.config.autoscaling}}
        body = metamapper(self.config.namespace, NAME, self.broker, [pool])
        body["spec"]["image"] = self.image
        body["spec"]["celery"] = {"settings": {"imports": [MODULE]}}
        return body

    def send(self, row: int, seconds: float) -> None:
        task_id = uuid.uuid4().hex
        self.app.send_task(TASK, args=[task_id, seconds, self.broker], queue=POOL)
        self.sent[task_id] = time.time()
        self.row_of[task_id] = row

    def timeline(self, watch: ReadyWatch, start: float, horizon: float) -> Replay:
        """This fleet's run, in seconds since the trace's start (``start``, monotonic)."""
        wall_start = time.time() - (time.monotonic() - start)
        ids = list(self.sent)
        started = [r[0].at - wall_start for i in ids if (r := records(self.broker, "started", i))]
        done = [r[0].at - wall_start for i in ids if (r := records(self.broker, "done", i))]
        changes = watch.changes(self.config.namespace)
        before = [n for at, n in changes if at < start]
        ready = [(0.0, before[-1] if before else 0),
                 *((at - start, n) for at, n in changes if start <= at <= start + horizon)]
        return Replay(self.config.label, [at - wall_start for at in self.sent.values()],
                      started, done, ready, horizon)

    def waits(self) -> dict[str, float]:
        """Seconds from sending to starting, of every task that started, by task id."""
        return {task_id: started[0].at - at for task_id, at in self.sent.items()
                if (started := records(self.broker, "started", task_id))}


def replay(trace: Sequence[Row], fleets: Sequence[Fleet], watch: ReadyWatch, horizon: float
           ) -> float:
    """Send the trace to every fleet from one clock and wait out the horizon; return the
    trace's start (monotonic)."""
    start = time.monotonic()
    end, next_line, pending = start + horizon, start, list(enumerate(trace))
    while (now := time.monotonic()) < end:
        while pending and start + pending[0][1].offset <= now:
            index, row = pending.pop(0)
            for _ in range(row.tasks):
                for fleet in fleets:
                    fleet.send(index, row.seconds)
        if now >= next_line:
            say(f"  {now - start:5.0f} s  " + " | ".join(
                f"{f.config.label}: {watch.ready(f.config.namespace)} ready, "
                f"{tally(f.broker, list(f.sent)).done}/{len(f.sent)} done" for f in fleets))
            next_line += PROGRESS_SECONDS
        wake = min(next_line, end, *(start + row.offset for _, row in pending[:1]))
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


@dataclass(frozen=True)
class Figures:
    p95_wait: float
    worker_seconds: float


def ratios(figures: dict[str, Figures]) -> str:
    """The closing line: our defaults over KEDA-like."""
    ours, keda = figures["our defaults"], figures["KEDA-like"]
    return (f"p95 wait vs KEDA-like: {ours.p95_wait / keda.p95_wait:.2f}x, "
            f"worker-seconds vs KEDA-like: {ours.worker_seconds / keda.worker_seconds:.2f}x")


def worst_by_row(waits: dict[str, float], row_of: dict[str, int]) -> dict[int, float]:
    """The longest wait of the tasks of each trace row (rows none of whose tasks started
    are left out)."""
    worst: dict[int, float] = {}
    for task_id, wait in waits.items():
        row = row_of[task_id]
        worst[row] = max(wait, worst.get(row, 0.0))
    return worst


def print_worst_by_row(trace: Sequence[Row], by_row: dict[str, dict[int, float]]) -> None:
    """Where the waits come from: each row's longest wait, per configuration."""
    print("\nthe longest wait of each row's tasks, s")
    print_table(["offset s", "tasks", *by_row],
                [[f"{r.offset:g}", r.tasks,
                  *(f"{worst[i]:.1f}" if i in worst else "-" for worst in by_row.values())]
                 for i, r in enumerate(trace)])


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
    parser.add_argument("--picture", type=Path, default=PICTURE,
                        help=f"where the PNG of the run goes (default {PICTURE})")
    parser.add_argument("--max-replicas", type=int, default=MAX_REPLICAS,
                        help="every pool's maximum (and the fixed fleet's size)")
    parser.add_argument("--window", type=float, default=None,
                        help="our scale-down window in seconds (default: the CRD's)")
    parser.add_argument("--poll", type=float, default=OPERATOR_DEFAULTS.poll_seconds,
                        help="our operator's polling interval in seconds (default: the "
                             f"operator's, {OPERATOR_DEFAULTS.poll_seconds:g})")
    args = parser.parse_args(argv)
    chosen = configs(args.max_replicas, args.window, args.poll)
    trace = read_trace(args.trace)
    horizon = trace[-1].offset + args.tail

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        with ExitStack() as stack:
            kube = stack.enter_context(cluster(root / "cluster", node=True))
            assert kube.images is not None
            redis_url = stack.enter_context(redis_server(root / "redis"))
            fleets = [Fleet(config, f"{redis_url.removesuffix('/0')}/{db}",
                            kube.images.workload, args.max_replicas)
                      for db, config in enumerate(chosen)]
            kube.apply([namespace_manifest(c.namespace) for c in chosen])
            by_poll = sorted(chosen, key=lambda c: c.poll_seconds)
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
                                   for f in fleets), 180, "the pools at their minimum",
                       interval=0.5)
            for fleet in fleets:
                if fleet.config.hpa:
                    stack.enter_context(hpa_model(
                        kube, fleet.config.namespace, f"{NAME}-{POOL}", fleet.broker, POOL,
                        Behaviour(CONCURRENCY, fleet.config.min_replicas, args.max_replicas)))
            say(f"replaying {args.trace.name} for {horizon:g} s ...")
            start = replay(trace, fleets, watch, horizon)
            rows, figures, replays, by_row = [], {}, [], {}
            for fleet in fleets:
                replays.append(fleet.timeline(watch, start, horizon))
                result = tally(fleet.broker, list(fleet.sent))
                waited = fleet.waits()
                by_row[fleet.config.label] = worst_by_row(waited, fleet.row_of)
                waits = list(waited.values())
                used, peak = watch.usage(fleet.config.namespace, start, start + horizon)
                figures[fleet.config.label] = Figures(
                    percentile(waits, 95) if waits else math.nan, used)
                rows.append([fleet.config.label, result.sent,
                             *(f"{percentile(waits, q):.1f}" if waits else "-" for q in (50, 95)),
                             f"{used:.0f}", peak, result.lost])
        left = leftovers(root)

    print_trace(trace, horizon)
    print(f"\nthe trace sent to each configuration side by side; figures over {horizon:g} s "
          f"(last row + {args.tail:g} s tail)")
    print_table(["configuration", "tasks", "p50 wait s", "p95 wait s", "worker-s",
                 "peak workers", "lost"], rows)
    print_worst_by_row(trace, by_row)
    picture = replay_picture(replays, args.picture, f"{args.trace.name} replayed to each "
                             f"configuration side by side (max {args.max_replicas} pods)")
    print(f"\npicture of the run: {picture}")
    print(ratios(figures))
    if left:
        raise SystemExit("processes left behind:\n" + "\n".join(left))


if __name__ == "__main__":
    main()
