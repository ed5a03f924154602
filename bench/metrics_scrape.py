"""The memory one /metrics scrape holds at once, with many pools.

Fills the operator's per-pool and per-queue gauges (:data:`metrics.pool_table`) as
``--objects`` Metamappers of the scale benchmark's two pools (3 queues) would, then
renders the exposition both ways and reports for each the peak of Python allocations
while rendering (``tracemalloc``) and the time a rendering takes (untraced):
prometheus_client's ``generate_latest`` (what its own server sends, rendered whole) and
the operator's endpoint (:mod:`metamapper_operator.metrics_server`, family by family).
Both must give the same text. No service is needed.

Usage::

    python bench/metrics_scrape.py [--objects 10000]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from _common import print_table
from metamapper_operator import metrics, metrics_server

POOLS = {"default": ("default", "checks"), "revisioner": ("revisioner",)}


@dataclass(frozen=True)
class Scrape:
    """One rendering: the bytes a scraper receives, the peak of Python allocations while
    rendering (traced) and the time it takes (untraced)."""

    sent: int
    peak_bytes: int
    seconds: float


def scrape(render: Callable[[], int]) -> Scrape:
    started = time.perf_counter()
    render()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    sent = render()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return Scrape(sent, peak, seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=10000)
    args = parser.parse_args(argv)
    registry = CollectorRegistry(auto_describe=False)
    table = metrics.PoolTable()
    registry.register(table)
    for n in range(args.objects):
        for pool, queues in POOLS.items():
            table.record(metrics.PoolSeries(f"bench-{n % 10:02d}", f"mm-{n:05d}", pool),
                         metrics.PoolFigures(0, 0, 0, 10, 0, {
                             queue: metrics.QueueFigures(0, 0, 0.0) for queue in queues}))
    text = generate_latest(registry)
    whole = scrape(lambda: len(generate_latest(registry)))
    # The chunks are counted and dropped, as a scraper receives them one by one.
    streamed = scrape(lambda: sum(len(c) for c in metrics_server.exposition(registry)))
    same = b"".join(metrics_server.exposition(registry)) == text
    print(f"\n{args.objects} Metamappers x {len(POOLS)} pools: "
          f"{len(text.splitlines()):,} lines, {len(text) / 1e6:.1f} MB of text")
    print_table(["exposition", "peak of allocations, MB", "render, s", "same text"], [
        ["prometheus_client generate_latest (whole)", f"{whole.peak_bytes / 1e6:.1f}",
         f"{whole.seconds:.2f}", ""],
        ["metrics_server.exposition (family by family)",
         f"{streamed.peak_bytes / 1e6:.1f}", f"{streamed.seconds:.2f}",
         "yes" if same and streamed.sent == whole.sent else "NO"],
    ])


if __name__ == "__main__":
    main()
