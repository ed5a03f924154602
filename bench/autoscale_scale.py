"""Scale: many Metamapper objects x 2 pools on one operator process, at rest.

Starts a local control plane, a Redis server and one ``metamapper-operator`` (default
settings: 2 s polling, 60 s resync, all namespaces), then creates ``--objects``
Metamappers spread over ``--namespaces`` namespaces (100 per ``kubectl apply``,
``--parallel`` of those at once), every one with two pools (minReplicas 0, so no Pod is
created), no scheduler, and the same broker (the Redis server, db 0). Once every object's
status shows both pools measured and Ready, it measures ``--seconds`` of steady state:

- the operator's CPU (``/proc/<pid>/stat`` utime + stime over the window, % of one core)
  and memory (``/proc/<pid>/status`` VmHWM = peak RSS since start, VmRSS at the end);
- its API requests (user agents ``metamapper-operator*`` and ``kopf*`` in the apiserver's
  audit log, received in the window), reads and writes per minute; writes are listed;
- broker round trips: Redis ``INFO commandstats`` calls of EXEC (one MULTI/EXEC per
  measurement) and EVAL (inside it: one script reads every queue, one counts the
  messages in flight) in the window, per
  autoscaling cycle
  (``metamapper_autoscale_cycle_seconds_count`` from the operator's /metrics).

Quality bars: CPU <= 5 % of a core, RSS <= 400 MB (at up to 10,000 objects), zero API
writes when nothing changed, one broker round trip per broker per cycle.

Usage::

    python bench/autoscale_scale.py [--objects 100] [--namespaces 10] [--seconds 60]
                                    [--parallel 4]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import (
    Cluster,
    Operator,
    Request,
    cluster,
    command_calls,
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
from metamapper_operator.config import Config

DEFAULTS = Config()

POOLS: list[dict[str, Any]] = [
    {"name": "default", "queues": ["default", "checks"], "concurrency": 4,
     "minReplicas": 0, "maxReplicas": 10},
    {"name": "revisioner", "queues": ["revisioner"], "concurrency": 2,
     "minReplicas": 0, "maxReplicas": 5},
]
BROKERS = 1  # every object uses the same Redis URL
CPU_BAR, RSS_BAR_MB = 5.0, 400.0
BATCH = 100
CYCLES = "metamapper_autoscale_cycle_seconds_count"
CYCLE_SECONDS = "metamapper_autoscale_cycle_seconds_sum"


def create(kube: Cluster, redis_url: str, objects: int, namespaces: int, parallel: int
           ) -> None:
    """The namespaces, then the objects, BATCH per ``kubectl apply`` (a call of thousands
    outlasts kubectl's timeout on a busy apiserver), ``parallel`` calls at once."""
    names = [f"bench-{n:02d}" for n in range(namespaces)]
    kube.apply([namespace_manifest(name) for name in names])
    numbers = list(range(objects))
    batches = [numbers[at:at + BATCH] for at in range(0, objects, BATCH)]

    def fill(batch: list[int]) -> None:
        kube.apply([metamapper(names[i % namespaces], f"mm-{i:05d}", redis_url, POOLS)
                    for i in batch])

    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(fill, batches))


def is_settled(obj: dict[str, Any]) -> bool:
    """Both pools measured by the autoscaler and the object Ready, as its status says."""
    status = obj.get("status") or {}
    pools = status.get("pools") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return ready and len(pools) == len(POOLS) and all("backlog" in p for p in pools)


def settled_count(kube: Cluster) -> int:
    items = json.loads(kube.kubectl("get", crd.PLURAL, "-A", "-o", "json"))["items"]
    return sum(is_settled(obj) for obj in items)


@dataclass(frozen=True)
class Usage:
    """The operator's CPU time at one instant."""

    at: float
    wall: datetime
    cpu_seconds: float

    @classmethod
    def take(cls, op: Operator) -> Usage:
        return cls(time.monotonic(), datetime.now(UTC), op.cpu_seconds())


@dataclass(frozen=True)
class Counters:
    """Autoscaling cycles (from /metrics) and Redis command calls, read together."""

    cycles: float
    cycle_seconds: float
    redis_calls: Counter[str]

    @classmethod
    def take(cls, op: Operator, redis_url: str) -> Counters:
        return cls(op.metric(CYCLES), op.metric(CYCLE_SECONDS), command_calls(redis_url))


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"


def report(args: argparse.Namespace, created: float, settled: float, op: Operator,
           start: tuple[Usage, Counters], end: tuple[Usage, Counters],
           requests: list[Request]) -> None:
    (start_usage, start_counts), (end_usage, end_counts) = start, end
    window = end_usage.at - start_usage.at
    cycles = end_counts.cycles - start_counts.cycles
    calls = end_counts.redis_calls - start_counts.redis_calls
    cpu = 100 * (end_usage.cpu_seconds - start_usage.cpu_seconds) / window
    peak_mb, rss_mb = op.memory_kib("VmHWM") / 1024, op.memory_kib("VmRSS") / 1024
    writes = [r for r in requests if r.write]
    per_minute = 60 / window
    exec_per_cycle = calls["exec"] / cycles / BROKERS
    evals_per_cycle = calls["eval"] / cycles / BROKERS
    # The two counters are read a moment apart: a cycle may be counted by one only.
    slack = (cycles + 1) / cycles
    evals_bar = 2
    print(f"\n{args.objects} Metamappers x {len(POOLS)} pools in {args.namespaces} namespaces, "
          f"{BROKERS} broker; one operator ({DEFAULTS.poll_seconds:g} s polling, "
          f"{DEFAULTS.resync_seconds:g} s resync)")
    print(f"created in {created:.1f} s ({math.ceil(args.objects / BATCH)} kubectl apply, "
          f"{args.parallel} at once), "
          f"all settled {settled:.1f} s later")
    print(f"steady window {window:.1f} s: {cycles:.0f} autoscaling cycles, mean cycle "
          f"{1000 * (end_counts.cycle_seconds - start_counts.cycle_seconds) / cycles:.1f} ms\n")
    print_table(["figure", "value", "bar", "within"], [
        ["operator CPU, % of one core", f"{cpu:.2f}", f"<= {CPU_BAR:g}",
         verdict(cpu <= CPU_BAR)],
        ["peak RSS (VmHWM), MB", f"{peak_mb:.1f}", f"<= {RSS_BAR_MB:g}",
         verdict(peak_mb <= RSS_BAR_MB)],
        ["RSS at the end (VmRSS), MB", f"{rss_mb:.1f}", "", ""],
        ["API reads / min", f"{(len(requests) - len(writes)) * per_minute:.1f}", "", ""],
        ["API writes / min", f"{len(writes) * per_minute:.1f}", "0", verdict(not writes)],
        ["broker round trips (EXEC) / broker / cycle", f"{exec_per_cycle:.2f}", "1",
         verdict(exec_per_cycle <= slack)],
        ["EVAL / broker / cycle", f"{evals_per_cycle:.2f}", f"{evals_bar}",
         verdict(evals_per_cycle <= evals_bar * slack)],
        ["LLEN / broker / cycle", f"{calls['llen'] / cycles / BROKERS:.1f}", "", ""],
    ])
    if requests:
        print_requests("\nthe operator's requests in the window:", requests)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0, help="steady window")
    parser.add_argument("--parallel", type=int, default=4, help="kubectl apply at once")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, \
            cluster(Path(tmp) / "cluster") as kube, \
            redis_server(Path(tmp) / "redis") as redis_url, \
            operator(kube, Path(tmp) / "operator.log") as op:
        say(f"creating {args.objects} Metamappers ...")
        began = time.monotonic()
        create(kube, redis_url, args.objects, args.namespaces, args.parallel)
        created = time.monotonic() - began
        # Listing every object costs the apiserver too: less often when there are many.
        wait_until(lambda: settled_count(kube) == args.objects, 60 + args.objects,
                   "every object settled", interval=max(2.0, args.objects / 250))
        settled = time.monotonic() - began - created
        say(f"settled; measuring {args.seconds:g} s of steady state ...")
        offset = kube.plane.audit_log.stat().st_size
        # A /metrics scrape costs the operator CPU (tens of ms at 1,000 objects): the
        # counters are read before the CPU window opens and after it closes.
        start = Counters.take(op, redis_url)
        start_usage = Usage.take(op)
        time.sleep(args.seconds)
        end_usage = Usage.take(op)
        end = Counters.take(op, redis_url)
        time.sleep(2)  # requests received before the end may be logged a moment later
        requests = operator_requests(kube.plane.audit_log, offset, start_usage.wall,
                                     end_usage.wall)
        report(args, created, settled, op, (start_usage, start), (end_usage, end), requests)


if __name__ == "__main__":
    main()
