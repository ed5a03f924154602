"""Replay traces three ways side by side: our defaults, KEDA-like, a fixed fleet.

Each trace (rows ``offset_seconds,tasks,task_seconds``; ``--trace`` as often as wanted, by
default every ``bench/*-trace.csv``: the bursty trace, Metamapper's beat, waves over a
trickle, a slow ramp; ``bench/_traces.py`` says how each was made) is replayed in turn, each
on fresh fleets: three Metamappers, each in a namespace of its own with a Redis database of
a Redis server started for that trace, all on one local control plane with a real node
(kubelet, containerd) that runs every pod as a real ``celery worker`` in a container of the
workload image (the worker image plus the tasks of ``devenv.workload``, which record when
each task started and finished). The operators run as local processes, one per polling
interval, started for each trace; when a trace's horizon is over they are stopped and its
namespaces deleted (pods and all) before the next trace starts, so that no trace's tail
runs beside the next. One pool each: concurrency 2, minReplicas 1 (KEDA's default is 0),
maxReplicas 8 (``--max-replicas``: high enough that capacity is decided by each policy,
not by the cap), each worker pod requesting 50m CPU (so that three pools of 8 fit the
node and none waits for room another holds). It also prints each
trace row's longest wait per configuration, to show where the waits come from.

* **our defaults**: the operator's and the CRD's defaults (the operator's polling interval
  or ``--poll``, in-flight messages counted, drain before delete, the backlog target of the
  concurrency (2 per pod) until the service time is measured, then ``targetWaitSeconds``;
  the scale-down window and tolerance as the CRD defaults them, or the window ``--window``
  gives). No fleet runs a scheduler: the replay sends every trace's tasks itself, so ours
  has no beat to warm up for (on the beat trace too: its production twin's warm-up, the
  default beat's entries every minute at ``warmUp.replicas`` 1, is covered by
  ``minReplicas`` 1 and would not raise the pool; ``bench/policy_simulation.py`` models
  it);
* **KEDA-like**: KEDA's Redis scaler with its defaults behind the HPA's defaults, as
  ``bench/_hpa.py`` models them (a target of 2 per pod, the queue's length only, read
  every 15 s; scale-up by max(100 %, 4 pods) per 15 s; scale-down to the highest
  recommendation of the last 300 s, the ReplicaSet controller picking the pods). Its
  operator polls once a day, so only the model scales it;
* **fixed at max**: autoscaling off, the maximum all the time.

Every figure of a trace is taken over the same horizon: from the trace's start to its last
row plus ``--tail`` seconds (330 by default, so the 300 s windows can shrink both
autoscaled pools before the end). Queue wait = the task's first ``started`` record - the
time it was sent; worker-seconds = the integral of the Deployment's
``status.readyReplicas`` (from a ``kubectl get --watch``: every change, as it happens) over
the horizon; peak = the most ready pods; lost = sent - done at the horizon's end.

Each trace ends with its picture (``--pictures``/``trace-replay-<trace>.png``) and one line
comparing our defaults with KEDA-like: ``p95 wait vs KEDA-like: X.XXx, worker-seconds vs
KEDA-like: Y.YYx`` and whether the goal is met: our p95 wait at most 0.5x KEDA-like's, at
most 0.8x its worker-seconds, none of our tasks lost. The run ends with one table of every
trace's ratios, lost tasks and verdict.

Usage::

    python bench/trace_replay.py [--trace bench/bursty-trace.csv --trace ...] [--tail 330]
                                 [--max-replicas 8] [--window SECONDS] [--poll SECONDS]
                                 [--pictures build]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from itertools import groupby
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
from _traces import Row, Trace, load
from devenv.pictures import Replay, replay_picture
from devenv.waiting import wait_until
from devenv.workload import MODULE, TASK, records, tally
from metamapper_operator.config import Config as OperatorConfig

PICTURES = Path(__file__).resolve().parent.parent / "build"
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
DELETE_SECONDS = 300   # a trace's namespaces, pods and all, deleted within
OURS, KEDA, FIXED = "our defaults", "KEDA-like", "fixed at max"
WAIT_GOAL = 0.5             # our p95 wait at most this times KEDA-like's
WORKER_SECONDS_GOAL = 0.8   # our worker-seconds at most this times KEDA-like's


@dataclass(frozen=True)
class Config:
    label: str
    namespace: str
    poll_seconds: float
    min_replicas: int
    autoscaling: dict[str, Any]
    hpa: bool = False   # scaled by the HPA model, not by its operator


def configs(max_replicas: int, window: float | None, poll: float, prefix: str
            ) -> tuple[Config, ...]:
    """The three configurations, in namespaces named ``<prefix>-...``; ``window`` replaces
    our default scale-down window, ``poll`` is our operator's polling interval."""
    ours = {} if window is None else {"scaleDownStabilizationSeconds": window}
    return (
        Config(OURS, f"{prefix}-ours", poll, 1, ours),
        Config(KEDA, f"{prefix}-keda", ONCE_A_DAY, 1, {}, hpa=True),
        Config(FIXED, f"{prefix}-fixed", poll, max_replicas, {"enabled": False}),
    )


@dataclass(frozen=True)
class Options:
    """What every trace is replayed with."""

    tail: float
    max_replicas: int
    window: float | None
    poll: float
    pictures: Path

    def horizon(self, trace: Trace) -> float:
        return trace.last_offset + self.tail


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


@contextmanager
def namespaces(kube: Cluster, names: Sequence[str]) -> Iterator[None]:
    """``names`` created; on exit deleted with everything in them, waited for: the next
    trace starts on a node without these pods."""
    kube.apply([namespace_manifest(name) for name in names])
    try:
        yield
    finally:
        say(f"deleting {', '.join(names)} ...")
        kube.kubectl("delete", "namespace", *names, "--wait=true",
                     f"--timeout={DELETE_SECONDS}s")


def pool_spec(config: Config, max_replicas: int) -> dict[str, Any]:
    """The one pool of ``config``'s fleet: the CRD's autoscaling defaults but for what the
    configuration sets (a backlog target given alone would turn the service-time sizing
    off; the default target, the concurrency, is the 2 per pod KEDA-like is given)."""
    return {"name": POOL, "queues": [POOL], "concurrency": CONCURRENCY,
            "minReplicas": config.min_replicas, "maxReplicas": max_replicas,
            "resources": {"requests": WORKER_REQUESTS},
            "autoscaling": dict(config.autoscaling)}


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
        body = metamapper(self.config.namespace, NAME, self.broker,
                          [pool_spec(self.config, self.max_replicas)])
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


# --- figures -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One configuration's figures over a trace's horizon (waits NaN when no task
    started)."""

    label: str
    sent: int
    p50_wait: float
    p95_wait: float
    worker_seconds: float
    peak: int
    lost: int

    def row(self) -> list[object]:
        return [self.label, self.sent, seconds(self.p50_wait), seconds(self.p95_wait),
                f"{self.worker_seconds:.0f}", self.peak, self.lost]


def seconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def percentile_or_nan(values: Sequence[float], q: float) -> float:
    return percentile(values, q) if values else math.nan


def ratio(ours: float, theirs: float) -> float | None:
    """``ours / theirs``; None when it means nothing (``theirs`` 0 or either NaN)."""
    quotient = ours / theirs if theirs else math.nan
    return None if math.isnan(quotient) else quotient


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


@dataclass(frozen=True)
class Comparison:
    """One trace's outcomes: our defaults against KEDA-like, and the goal's verdict."""

    trace: str
    outcomes: tuple[Outcome, ...]

    def of(self, label: str) -> Outcome:
        return next(outcome for outcome in self.outcomes if outcome.label == label)

    @property
    def wait_ratio(self) -> float | None:
        return ratio(self.of(OURS).p95_wait, self.of(KEDA).p95_wait)

    @property
    def worker_seconds_ratio(self) -> float | None:
        return ratio(self.of(OURS).worker_seconds, self.of(KEDA).worker_seconds)

    def shortfalls(self) -> list[str]:
        """Where the goal is missed (compared as products: a p95 wait of 0 against 0
        meets it, a NaN never does)."""
        ours, keda = self.of(OURS), self.of(KEDA)
        missed = []
        if not ours.p95_wait <= WAIT_GOAL * keda.p95_wait:
            missed.append(f"p95 wait {times(self.wait_ratio)} > {WAIT_GOAL:g}x")
        if not ours.worker_seconds <= WORKER_SECONDS_GOAL * keda.worker_seconds:
            missed.append(f"worker-seconds {times(self.worker_seconds_ratio)} > "
                          f"{WORKER_SECONDS_GOAL:g}x")
        if ours.lost:
            missed.append(f"{ours.lost} lost")
        return missed

    def verdict(self) -> str:
        missed = self.shortfalls()
        return f"no: {', '.join(missed)}" if missed else "yes"

    def line(self) -> str:
        """The closing line of the trace's report."""
        return (f"p95 wait vs {KEDA}: {times(self.wait_ratio)}, worker-seconds vs {KEDA}: "
                f"{times(self.worker_seconds_ratio)}; goal met: {self.verdict()}")

    def summary_row(self) -> list[object]:
        return [self.trace, seconds(self.of(OURS).p95_wait), seconds(self.of(KEDA).p95_wait),
                times(self.wait_ratio), times(self.worker_seconds_ratio),
                *(outcome.lost for outcome in self.outcomes), self.verdict()]


def print_summary(comparisons: Sequence[Comparison]) -> None:
    print(f"\nevery trace: the goal is our p95 wait at most {WAIT_GOAL:g}x {KEDA}'s at "
          f"most {WORKER_SECONDS_GOAL:g}x its worker-seconds, none of ours lost")
    print_table(["trace", "ours p95 wait s", f"{KEDA} p95 wait s", "p95 wait ratio",
                 "worker-s ratio", *(f"{o.label} lost" for o in comparisons[0].outcomes),
                 "goal met"],
                [comparison.summary_row() for comparison in comparisons])


@dataclass(frozen=True)
class Measured:
    """One fleet's run of a trace: its figures, its timeline, each row's longest wait."""

    outcome: Outcome
    replay: Replay
    worst: dict[int, float]


def measure(fleet: Fleet, watch: ReadyWatch, start: float, horizon: float) -> Measured:
    result = tally(fleet.broker, list(fleet.sent))
    waited = fleet.waits()
    waits = list(waited.values())
    used, peak = watch.usage(fleet.config.namespace, start, start + horizon)
    return Measured(
        Outcome(fleet.config.label, result.sent, percentile_or_nan(waits, 50),
                percentile_or_nan(waits, 95), used, peak, result.lost),
        fleet.timeline(watch, start, horizon), worst_by_row(waited, fleet.row_of))


def worst_by_row(waits: dict[str, float], row_of: dict[str, int]) -> dict[int, float]:
    """The longest wait of the tasks of each trace row (rows none of whose tasks started
    are left out)."""
    worst: dict[int, float] = {}
    for task_id, wait in waits.items():
        row = row_of[task_id]
        worst[row] = max(wait, worst.get(row, 0.0))
    return worst


def print_worst_by_row(trace: Sequence[Row], measured: Sequence[Measured]) -> None:
    """Where the waits come from: each row's longest wait, per configuration."""
    print("\nthe longest wait of each row's tasks, s")
    print_table(["offset s", "tasks", *(m.outcome.label for m in measured)],
                [[f"{r.offset:g}", r.tasks,
                  *(f"{m.worst[i]:.1f}" if i in m.worst else "-" for m in measured)]
                 for i, r in enumerate(trace)])


def print_trace(trace: Trace, horizon: float) -> None:
    rows = trace.rows
    print(f"\ntrace {trace.name} ({trace.path}): {sum(r.tasks for r in rows)} tasks, "
          f"{sum(r.tasks * r.seconds for r in rows):.0f} task-seconds, last row at "
          f"{trace.last_offset:g} s; horizon {horizon:g} s")
    print_table(["offset s", "tasks", "task s", "work task-s"],
                [[f"{r.offset:g}", r.tasks, f"{r.seconds:g}", f"{r.tasks * r.seconds:g}"]
                 for r in rows])


def picture_path(folder: Path, trace: Trace) -> Path:
    return folder / f"trace-replay-{trace.name}.png"


def report(trace: Trace, options: Options, measured: Sequence[Measured]) -> Comparison:
    """The trace's own output: its rows, each configuration's figures, each row's longest
    wait, its picture and the closing line."""
    horizon = options.horizon(trace)
    print_trace(trace, horizon)
    print(f"\nthe trace sent to each configuration side by side; figures over {horizon:g} s "
          f"(last row + {options.tail:g} s tail)")
    print_table(["configuration", "tasks", "p50 wait s", "p95 wait s", "worker-s",
                 "peak workers", "lost"], [m.outcome.row() for m in measured])
    print_worst_by_row(trace.rows, measured)
    picture = replay_picture([m.replay for m in measured], picture_path(options.pictures, trace),
                             f"{trace.path.name} replayed to each configuration side by side "
                             f"(max {options.max_replicas} pods)")
    print(f"\npicture of the run: {picture}")
    comparison = Comparison(trace.name, tuple(m.outcome for m in measured))
    print(comparison.line())
    return comparison


# --- one trace on fresh fleets -----------------------------------------------------


def replay_trace(kube: Cluster, watch: ReadyWatch, root: Path, prefix: str, trace: Trace,
                 options: Options) -> list[Measured]:
    """``trace`` sent to three fleets of its own (namespaces ``<prefix>-...``, a Redis
    server, operators), measured, and everything it started stopped and deleted again."""
    chosen = configs(options.max_replicas, options.window, options.poll, prefix)
    horizon = options.horizon(trace)
    assert kube.images is not None
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(root / "redis"))
        fleets = [Fleet(config, f"{redis_url.removesuffix('/0')}/{db}",
                        kube.images.workload, options.max_replicas)
                  for db, config in enumerate(chosen)]
        # Entered before the operators: on the way out they stop first, then the
        # namespaces go, so nothing recreates what is being deleted.
        stack.enter_context(namespaces(kube, [c.namespace for c in chosen]))
        by_poll = sorted(chosen, key=lambda c: c.poll_seconds)
        for poll, group in groupby(by_poll, key=lambda c: c.poll_seconds):
            watched = [arg for c in group for arg in ("--namespace", c.namespace)]
            stack.enter_context(operator(kube, root / f"operator-{poll:g}s.log",
                                         "--poll-interval", f"{poll:g}", *watched))
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
                    Behaviour(CONCURRENCY, fleet.config.min_replicas, options.max_replicas)))
        say(f"replaying {trace.path.name} for {horizon:g} s ...")
        start = replay(trace.rows, fleets, watch, horizon)
        return [measure(fleet, watch, start, horizon) for fleet in fleets]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trace", type=Path, action="append",
                        help="a trace (CSV); give it again for more (default: every "
                             "bench/*-trace.csv)")
    parser.add_argument("--tail", type=float, default=330.0,
                        help="seconds measured after each trace's last row")
    parser.add_argument("--pictures", type=Path, default=PICTURES,
                        help="the folder of the PNGs, trace-replay-<trace>.png (default "
                             f"{PICTURES})")
    parser.add_argument("--max-replicas", type=int, default=MAX_REPLICAS,
                        help="every pool's maximum (and the fixed fleet's size)")
    parser.add_argument("--window", type=float, default=None,
                        help="our scale-down window in seconds (default: the CRD's)")
    parser.add_argument("--poll", type=float, default=OPERATOR_DEFAULTS.poll_seconds,
                        help="our operator's polling interval in seconds (default: the "
                             f"operator's, {OPERATOR_DEFAULTS.poll_seconds:g})")
    args = parser.parse_args(argv)
    traces = load(args.trace)
    options = Options(args.tail, args.max_replicas, args.window, args.poll, args.pictures)
    say(f"{len(traces)} trace(s): " + ", ".join(
        f"{t.name} ({options.horizon(t):g} s)" for t in traces))

    comparisons = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        root = Path(tmp)
        with ExitStack() as stack:
            kube = stack.enter_context(cluster(root / "cluster", node=True))
            watch = stack.enter_context(ready_watch(kube))
            for number, trace in enumerate(traces, 1):
                measured = replay_trace(kube, watch, root / f"trace-{number}",
                                        f"{NAME}-{number}", trace, options)
                comparisons.append(report(trace, options, measured))
        left = leftovers(root)

    print_summary(comparisons)
    if left:
        raise SystemExit("processes left behind:\n" + "\n".join(left))


if __name__ == "__main__":
    main()
