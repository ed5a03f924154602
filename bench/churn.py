"""Churn: a large installation when it is not at rest (creation, restart, edits, bursts,
deletions).

Starts a local control plane (no node: the figures are the operator's and the
apiserver's), a Redis server and one ``metamapper-operator`` (default settings), then
runs these phases one after the other:

- **create**: ``--objects`` Metamappers (two pools each, minReplicas 0, no scheduler,
  the shape of ``bench/autoscale_scale.py``) created 100 per ``kubectl apply``, until
  every one is settled (both pools measured, Ready);
- **restart**: the operator stopped and a fresh process started, as a new leader after a
  failover starts: with nothing in memory. Just before it starts, a burst is sent to the
  object created last (the only one on Redis database 1, so its queue is its own). Timed:
  the first autoscaling cycle, the burst's first scale, every object observed again (each
  object's pools in the operator's metrics again);
- **edit**: 10 % of the objects get a new image in one go; until each of their
  Deployments runs it;
- **burst up** / **burst down**: messages on every pool's queues at once (every fleet
  shares database 0); until every pool has been scaled up; the queues emptied, until
  every pool is back at 0;
- **delete**: 10 % of the objects deleted; until the operator no longer reports them.

Per phase: wall time; the operator's API requests (user agents ``metamapper-operator*``
and ``kopf*`` in the apiserver's audit log, received in the phase), reads and writes,
per object the phase touches; its peak RSS during the phase (VmHWM, reset when the phase
starts); its CPU seconds; and the apiserver's CPU seconds over the same time, so the
operator's share of the bottleneck shows. The writes of each phase are listed by verb and
resource.

Goals (issue figures for 10,000 objects; the phases scale): restart: burst acted on within
10 s, every object observed within 60 s, 0 writes for unchanged objects, peak RSS
<= 400 MB; creation: <= 8 operator requests per object; edit of 1,000: every Deployment
within 2 minutes; burst on 1,000 fleets: every pool within 30 s.

Usage::

    python bench/churn.py [--objects 10000] [--namespaces 10] [--parallel 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from _common import (
    Cluster,
    Operator,
    Request,
    cluster,
    cpu_seconds,
    metamapper,
    namespace_manifest,
    operator,
    operator_requests,
    print_requests,
    print_table,
    redis_server,
    say,
)
from devenv.waiting import wait_until
from metamapper_operator import crd
from metamapper_operator.builders import MANAGED_SELECTOR

POOLS: list[dict[str, Any]] = [
    {"name": "default", "queues": ["default"], "concurrency": 4, "minReplicas": 0,
     "maxReplicas": 10, "autoscaling": {"scaleDownStabilizationSeconds": 1,
                                        "scaleToZeroCooldownSeconds": 1}},
    {"name": "revisioner", "queues": ["revisioner"], "concurrency": 2, "minReplicas": 0,
     "maxReplicas": 5, "autoscaling": {"scaleDownStabilizationSeconds": 1,
                                       "scaleToZeroCooldownSeconds": 1}},
]
QUEUES = [queue for pool in POOLS for queue in pool["queues"]]
IMAGE, NEW_IMAGE = "metamapper-worker:0.1.0", "metamapper-worker:0.1.1"
BURST = 8          # messages per queue: every pool scales above 0
BATCH = 100        # objects per kubectl apply
POLL = 2.0         # seconds between looks at the cluster or the operator's metrics
POOL_SERIES = "metamapper_pool_desired_replicas"
CYCLES = "metamapper_autoscale_cycle_seconds_count"
SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_SELECTOR.items())


@dataclass(frozen=True)
class Fleet:
    """One benchmark object."""

    namespace: str
    name: str
    broker: str

    def manifest(self, image: str = IMAGE) -> dict[str, Any]:
        obj = metamapper(self.namespace, self.name, self.broker, POOLS)
        obj["spec"]["image"] = image
        return obj


@dataclass
class Phase:
    """What one phase cost."""

    name: str
    objects: int                 # the objects it touches
    wall: float = 0.0
    requests: list[Request] = field(default_factory=list)
    peak_mb: float = 0.0
    cpu: float = 0.0
    apiserver_cpu: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)   # seconds into the phase

    @property
    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.write]


@dataclass
class Bench:
    kube: Cluster
    redis_url: str
    fleets: list[Fleet]
    logs: Path
    op: Operator | None = None
    phases: list[Phase] = field(default_factory=list)

    @property
    def apiserver(self) -> int:
        return self.kube.plane.pids["kube-apiserver"]

    @contextmanager
    def phase(self, name: str, objects: int) -> Iterator[Phase]:
        """Measure what runs inside as one phase (the operator may be replaced inside:
        its CPU and peak are then the new process's)."""
        found = Phase(name, objects)
        audit = self.kube.plane.audit_log
        offset = audit.stat().st_size
        began, wall = time.monotonic(), datetime.now(UTC)
        api_cpu = cpu_seconds(self.apiserver)
        op_pid, op_cpu = self._operator_usage(reset=True)
        say(f"phase {name} ({objects} objects) ...")
        yield found
        found.wall = time.monotonic() - began
        ended = datetime.now(UTC)
        found.apiserver_cpu = cpu_seconds(self.apiserver) - api_cpu
        assert self.op is not None
        found.cpu = self.op.cpu_seconds() - (op_cpu if op_pid == self.op.pid else 0.0)
        found.peak_mb = self.op.memory_kib("VmHWM") / 1024
        time.sleep(2)   # requests received before the end may be logged a moment later
        found.requests = operator_requests(audit, offset, wall, ended)
        self.phases.append(found)
        say(f"phase {name}: " + ", ".join(f"{h} {c}" for h, c in zip(
            HEADERS[2:], row(found)[2:], strict=True)) + "".join(
            f", {mark} at {at:.1f} s" for mark, at in found.marks.items()))

    def _operator_usage(self, reset: bool) -> tuple[int, float]:
        if self.op is None:
            return 0, 0.0
        if reset:   # VmHWM from now on (Linux: clear_refs 5 resets the peak RSS)
            Path(f"/proc/{self.op.pid}/clear_refs").write_text("5")
        return self.op.pid, self.op.cpu_seconds()

    # --- what the cluster and the operator show ---------------------------------

    def deployments(self) -> dict[tuple[str, str], tuple[int, str]]:
        """Every managed Deployment: (replicas, image) by (namespace, name)."""
        out = self.kube.kubectl(
            "get", "deployments", "-A", "-l", SELECTOR, "--no-headers", "-o",
            "custom-columns=NS:.metadata.namespace,NAME:.metadata.name,"
            "R:.spec.replicas,IMAGE:.spec.template.spec.containers[0].image")
        found = {}
        for line in out.splitlines():
            namespace, name, replicas, image = line.split()
            found[namespace, name] = (int(replicas), image)
        return found

    def replicas(self, fleet: Fleet, pool: str) -> int:
        return int(self.kube.kubectl("get", "deployment", "-n", fleet.namespace,
                                     f"{fleet.name}-{pool}", "-o", "jsonpath={.spec.replicas}"))

    def observed(self) -> set[tuple[str, ...]]:
        """The objects whose pools the operator's metrics show, as (namespace, name)."""
        assert self.op is not None
        return self.op.labelled(POOL_SERIES, ("namespace", "metamapper"))

    def settled(self) -> int:
        out = self.kube.kubectl("get", crd.PLURAL, "-A", "--no-headers", "-o",
                                "custom-columns=R:.status.conditions[?(@.type=='Ready')]"
                                ".status,B:.status.backlog")
        return sum(line.split() == ["True", "0"] for line in out.splitlines())

    def burst(self, urls: list[str], queues: list[str]) -> None:
        for url in urls:
            with Celery("producer", broker=url, set_as_current=False) as app:
                for queue in queues:
                    for _ in range(BURST):
                        app.send_task("metamapper.noop", queue=queue)

    def empty(self, urls: list[str]) -> None:
        for url in urls:
            with redis.Redis.from_url(url) as client:
                client.delete(*QUEUES)


def mark(phase: Phase, began: float, name: str) -> None:
    phase.marks[name] = time.monotonic() - began


def wait(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    """Wait until ``predicate`` holds; a look that fails (an apiserver too busy to answer
    a listing, the operator's metrics page restarting) is a look that found nothing."""
    def look() -> bool:
        try:
            return predicate()
        except (RuntimeError, OSError) as err:
            say(f"  looking for {what}: {err}")
            return False

    wait_until(look, timeout, what, interval=POLL)


def create(bench: Bench, parallel: int) -> None:
    namespaces = sorted({f.namespace for f in bench.fleets})
    bench.kube.apply([namespace_manifest(n) for n in namespaces])
    batches = [bench.fleets[at:at + BATCH] for at in range(0, len(bench.fleets), BATCH)]
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda batch: bench.kube.apply([f.manifest() for f in batch]),
                      batches))


def run(args: argparse.Namespace, tmp: Path, phases: list[Phase]) -> None:
    """The phases, each appended to ``phases`` as it ends."""
    with ExitStack() as stack:
        kube = stack.enter_context(cluster(tmp / "cluster"))
        redis_url = stack.enter_context(redis_server(tmp / "redis"))
        last_url = redis_url.rpartition("/")[0] + "/1"   # the last object's broker alone
        fleets = [Fleet(f"churn-{n % args.namespaces:02d}", f"mm-{n:05d}",
                        last_url if n == args.objects - 1 else redis_url)
                  for n in range(args.objects)]
        bench = Bench(kube, redis_url, fleets, tmp, phases=phases)
        first = stack.enter_context(ExitStack())
        bench.op = first.enter_context(operator(kube, tmp / "operator-1.log"))
        n = len(fleets)
        timeout = 120 + n

        with bench.phase("create", n) as phase:
            began = time.monotonic()
            create(bench, args.parallel)
            mark(phase, began, "applied")
            wait("every object settled", lambda: bench.settled() == n, timeout)

        last = fleets[-1]
        with bench.phase("restart", n) as phase:
            first.close()   # the old leader is gone
            began = time.monotonic()
            bench.burst([last_url], ["default"])
            bench.op = stack.enter_context(operator(kube, tmp / "operator-2.log"))
            mark(phase, began, "live")
            wait("first autoscaling cycle", lambda: bench.op is not None
                 and bench.op.metric(CYCLES) > 0, timeout)
            mark(phase, began, "first cycle")
            wait("the burst acted on", lambda: bench.replicas(last, "default") > 0, timeout)
            mark(phase, began, "burst scaled")
            wait("every object observed again", lambda: len(bench.observed()) == n, timeout)
            mark(phase, began, "all observed")
        bench.empty([last_url])
        wait("the burst's pool back at 0", lambda: bench.replicas(last, "default") == 0,
             timeout)

        edited = fleets[:max(1, n // 10)]
        names = {(f.namespace, f"{f.name}-{p['name']}") for f in edited for p in POOLS}
        with bench.phase("edit", len(edited)):
            kube.apply([f.manifest(NEW_IMAGE) for f in edited])
            wait("every edited Deployment updated", lambda: all(
                image == NEW_IMAGE for key, (_, image) in bench.deployments().items()
                if key in names), timeout)

        urls = [redis_url, last_url]
        with bench.phase("burst up", n):
            bench.burst(urls, QUEUES)
            wait("every pool scaled up", lambda: all(
                replicas > 0 for replicas, _ in bench.deployments().values()), timeout)
        with bench.phase("burst down", n):
            bench.empty(urls)
            wait("every pool back at 0", lambda: all(
                replicas == 0 for replicas, _ in bench.deployments().values()), timeout)

        deleted = fleets[:max(1, n // 10)]
        gone = {(f.namespace, f.name) for f in deleted}
        with bench.phase("delete", len(deleted)):
            for namespace in sorted({f.namespace for f in deleted}):
                kube.kubectl("delete", crd.PLURAL, "-n", namespace, "--wait=false",
                             *[f.name for f in deleted if f.namespace == namespace])
            wait("the deleted objects no longer reported",
                 lambda: not gone & bench.observed(), timeout)


HEADERS = ["phase", "objects", "wall s", "reads/obj", "writes/obj", "peak RSS MB",
           "operator CPU s", "apiserver CPU s"]


def row(p: Phase) -> list[str]:
    reads = len(p.requests) - len(p.writes)
    return [p.name, str(p.objects), f"{p.wall:.1f}", f"{reads / p.objects:.2f}",
            f"{len(p.writes) / p.objects:.2f}", f"{p.peak_mb:.1f}", f"{p.cpu:.1f}",
            f"{p.apiserver_cpu:.1f}"]


def report(args: argparse.Namespace, phases: list[Phase]) -> None:
    print(f"\n{args.objects} Metamappers x {len(POOLS)} pools in {args.namespaces} "
          "namespaces; one operator, default settings\n")
    print_table(HEADERS, [row(p) for p in phases])
    for p in phases:
        if p.marks:
            print(f"\n{p.name}: " + ", ".join(f"{name} at {at:.1f} s"
                                               for name, at in p.marks.items()))
    for p in phases:
        print_requests(f"\n{p.name}: the operator's requests", p.requests)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2, help="kubectl apply at once")
    args = parser.parse_args(argv)
    phases: list[Phase] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
            run(args, Path(tmp), phases)
    finally:   # a phase that did not finish in time: the figures of those that did
        report(args, phases)


if __name__ == "__main__":
    main()
