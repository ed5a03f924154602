"""Reaction to a queue burst: from the burst's last message in Redis to the new pool size.

For each polling interval (default 1 s and 5 s) one operator process runs against a
local control plane (no node: the figure is the operator's, and real workers would drain
the burst before it is measured), with one Metamapper whose pool sits at its minimum. Each
burst is ``--messages`` real Celery task messages (9 with 2 per pod: 5 pods); the time
is taken when the last one is in Redis and when ``kubectl get --watch`` reports the
Deployment's ``spec.replicas`` at the burst's size. The queue is then drained (its list
deleted) and the pool's return to its minimum awaited (stabilization window 1 s) before
the next burst, which starts after a random delay within one polling interval so bursts
land at every phase of the polling cycle. The runs of the different intervals go side by
side, each in a namespace of its own with an operator watching only that namespace.

Quality bar: the Deployment is updated within one polling interval (+0.5 s).

Usage::

    python bench/autoscale_reaction.py [--bursts 20] [--intervals 1 5] [--messages 9]
"""

from __future__ import annotations

import argparse
import math
import queue
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
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

NAME = "burst"
DEPLOYMENT = f"{NAME}-default"
MIN_REPLICAS = 1
CONCURRENCY = 2
BAR_SLACK = 0.5


class ReplicaWatch:
    """A Deployment's ``spec.replicas`` from ``kubectl get --watch``, timed on arrival."""

    def __init__(self, kube: Cluster, namespace: str, name: str) -> None:
        self._proc = kube.popen_kubectl("get", "deployment", name, "-n", namespace, "--watch",
                                        "-o", 'jsonpath={.spec.replicas}{"\\n"}')
        self._events: queue.Queue[tuple[float, int]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                self._events.put((time.monotonic(), int(line)))

    def until(self, accept: Callable[[int], bool], timeout: float) -> float:
        """The arrival time of the next reported size that ``accept`` takes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                arrived, replicas = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{DEPLOYMENT}: no accepted size within {timeout} s") from None
            if accept(replicas):
                return arrived

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()


@contextmanager
def replica_watch(kube: Cluster, namespace: str, name: str) -> Iterator[ReplicaWatch]:
    watch = ReplicaWatch(kube, namespace, name)
    try:
        yield watch
    finally:
        watch.close()


@dataclass(frozen=True)
class Run:
    interval: float
    bursts: int
    messages: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.interval:g}s"

    @property
    def queue(self) -> str:
        return f"burst-{self.label}"

    @property
    def target(self) -> int:
        """The pool's size for one burst."""
        return max(MIN_REPLICAS, math.ceil(self.messages / CONCURRENCY))


def measure(kube: Cluster, redis_url: str, logs: Path, run: Run) -> list[float]:
    """Seconds from each burst's last message to the Deployment at the burst's size."""
    namespace = f"reaction-{run.label.replace('.', '-')}"
    pool = {"name": "default", "queues": [run.queue], "concurrency": CONCURRENCY,
            "minReplicas": MIN_REPLICAS, "maxReplicas": 10,
            "autoscaling": {"scaleDownStabilizationSeconds": 1}}
    kube.apply([namespace_manifest(namespace), metamapper(namespace, NAME, redis_url, [pool])])
    rng = random.Random(run.seed)
    app = Celery("producer", broker=redis_url, set_as_current=False)
    client = redis.Redis.from_url(redis_url)
    latencies: list[float] = []
    with app, client, operator(kube, logs / f"operator-{run.label}.log", "--namespace", namespace,
                  "--poll-interval", str(run.interval)):
        wait_until(lambda: kube.kubectl("get", "metamapper", NAME, "-n", namespace, "-o",
                                        "jsonpath={.status.backlog}") == "0",
                   60, f"{NAME} measured once")
        with replica_watch(kube, namespace, DEPLOYMENT) as watch:
            watch.until(lambda n: n == MIN_REPLICAS, 30)
            for burst in range(run.bursts):
                time.sleep(rng.uniform(0, run.interval))
                for _ in range(run.messages):
                    app.send_task("metamapper.noop", queue=run.queue)
                pushed = time.monotonic()
                latencies.append(watch.until(lambda n: n == run.target, run.interval + 30) - pushed)
                client.delete(run.queue)
                watch.until(lambda n: n == MIN_REPLICAS, run.interval + 60)
                say(f"  {run.label} polling: burst {burst + 1}/{run.bursts}: "
                    f"{latencies[-1]:.2f} s")
    return latencies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bursts", type=int, default=20, help="bursts per interval")
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 5.0],
                        metavar="SECONDS", help="polling intervals, one operator run each")
    parser.add_argument("--messages", type=int, default=9, help="messages per burst")
    parser.add_argument("--seed", type=int, default=1, help="seed of the burst delays")
    args = parser.parse_args(argv)

    runs = [Run(interval, args.bursts, args.messages, args.seed) for interval in args.intervals]
    with tempfile.TemporaryDirectory(prefix="bench-reaction-") as tmp, \
            cluster(Path(tmp) / "cluster") as kube, \
            redis_server(Path(tmp) / "redis") as redis_url, \
            ThreadPoolExecutor(len(runs)) as side_by_side:
        results = list(side_by_side.map(lambda run: measure(kube, redis_url, Path(tmp), run), runs))

    print(f"\nburst of {args.messages} messages -> Deployment {MIN_REPLICAS} -> {runs[0].target} "
          f"replicas (time from the last message in Redis to the watch event)")
    rows = []
    for run, latencies in zip(runs, results, strict=True):
        bar = run.interval + BAR_SLACK
        over = sum(latency > bar for latency in latencies)
        rows.append([run.label, len(latencies), f"{min(latencies):.2f}",
                     f"{percentile(latencies, 50):.2f}", f"{percentile(latencies, 95):.2f}",
                     f"{max(latencies):.2f}", f"{bar:g}",
                     "yes" if over == 0 else f"no ({over} over)"])
    print_table(["polling", "bursts", "min s", "p50 s", "p95 s", "max s", "bar s",
                 "all within bar"], rows)


if __name__ == "__main__":
    main()
