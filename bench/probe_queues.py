"""The Redis probe's cost per poll by the number of queues it measures.

A Redis server of the benchmark's own gets ``--queues`` queues, each with a message in
every priority list (kombu's four by default: ``q``, ``q\\x06\\x163``, ``...6``, ``...9``),
and the operator's own probe (:class:`~metamapper_operator.brokers.redis.RedisProbe`)
measures them all ``--polls`` times after a first poll. Per poll it reports:

- the round trips the probe made (its own count);
- the wall time of one ``measure()`` (median), on this machine;
- the commands the server ran inside the transaction (``INFO commandstats``, scripts'
  inner calls included, MULTI/EXEC excluded);
- the bytes the server received and sent (``INFO stats``, the INFO calls included);
- the server's CPU time (``INFO cpu`` used_cpu_user + used_cpu_sys).

Usage::

    python bench/probe_queues.py [--queues 32] [--polls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from _common import percentile, print_table, redis_server, say
from metamapper_operator.brokers.redis import RedisProbe, list_keys
from metamapper_operator.references import BrokerAccess, RedisLayout

#: Commands the transaction itself adds, not the probe's reads.
FRAMING = {"multi", "exec", "info"}


def counters(url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("all")
    finally:
        client.close()
    stats = {name.removeprefix("cmdstat_"): value for name, value in info.items()
             if name.startswith("cmdstat_")}
    return {"received": int(info["total_net_input_bytes"]),
            "sent": int(info["total_net_output_bytes"]),
            "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
            "calls": sum(int(s["calls"]) for n, s in stats.items() if n not in FRAMING)}


async def polls(url: str, names: list[str], count: int) -> tuple[int, list[float]]:
    probe = RedisProbe(BrokerAccess(transport="redis", url=url), timeout=60)
    try:
        await probe.measure(names)  # connects
        first = probe.round_trips
        times = []
        for _ in range(count):
            started = time.perf_counter()
            depths = await probe.measure(names)
            times.append(time.perf_counter() - started)
        assert all(depth.waiting == 4 for depth in depths.values()), depths
        return (probe.round_trips - first) // count, times
    finally:
        await probe.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=32)
    parser.add_argument("--polls", type=int, default=200)
    args = parser.parse_args(argv)
    names = [f"queue-{n}" for n in range(args.queues)]
    message = json.dumps({"body": "e30=", "headers": {"published_at": time.time()}})
    with tempfile.TemporaryDirectory(prefix="bench-queues-") as tmp, \
            redis_server(Path(tmp)) as url:
        client = redis.Redis.from_url(url)
        for name in names:
            for key in list_keys(name, RedisLayout()):
                client.lpush(key, message)
        client.close()
        say(f"  {args.queues} queues, {args.polls} polls ...")
        before = counters(url)
        trips, times = asyncio.run(polls(url, names, args.polls))
        after = counters(url)
    n = args.polls + 1  # the first poll is inside the counters' window too
    print(f"\nRedis probe, {args.queues} queues of 4 priority lists, {args.polls} polls")
    print_table(["round trips / poll", "poll median ms", "commands / poll",
                 "bytes to server / poll", "bytes from server / poll",
                 "server CPU ms / poll"], [[
                     trips, f"{1000 * percentile(times, 50):.2f}",
                     f"{(after['calls'] - before['calls']) / n:.0f}",
                     f"{(after['received'] - before['received']) / n:.0f}",
                     f"{(after['sent'] - before['sent']) / n:.0f}",
                     f"{1000 * (after['cpu'] - before['cpu']) / n:.3f}"]])


if __name__ == "__main__":
    main()
