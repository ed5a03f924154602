"""The Redis probe with many messages in flight: time and bytes per poll, small and large
message bodies.

For each body size, a Redis server of the benchmark's own gets ``--messages`` real Celery
task messages (``send_task`` to the queue ``default``), and a kombu consumer takes every
one without acknowledging it, so each waits in ``unacked`` / ``unacked_index`` exactly
as a message a worker prefetched or runs does. Then the operator's own probe
(:class:`~metamapper_operator.brokers.redis.RedisProbe`) measures the queue ``--polls``
times, one after the other, after a first poll. Per poll it reports:

- the wall time of one ``measure()`` (median and p95), on this machine;
- the bytes the server received and sent (``INFO stats`` total_net_input_bytes and
  total_net_output_bytes over the polls, the two INFO calls included);
- the server's CPU time (``INFO cpu`` used_cpu_user + used_cpu_sys over the polls).

The first poll of a probe loads every in-flight entry once (Lua's HGET) to find its
routing key, so its cost grows with the body; it is reported apart (its wall time, which
includes connecting, and the server's CPU). Later polls load only entries they have not
seen, so neither their bytes nor the server's work should grow with the body.

Usage::

    python bench/probe_in_flight.py [--messages 10000] [--polls 50] [--large-kib 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from celery import Celery
from kombu import Connection

from _common import percentile, print_table, redis_server, say
from metamapper_operator.brokers.redis import RedisProbe
from metamapper_operator.references import BrokerAccess

QUEUE = "default"


@dataclass(frozen=True)
class Server:
    """The server's counters at one instant."""

    received: int
    sent: int
    cpu: float

    @classmethod
    def take(cls, url: str) -> Server:
        client = redis.Redis.from_url(url)
        try:
            info = client.info()
        finally:
            client.close()
        return cls(int(info["total_net_input_bytes"]), int(info["total_net_output_bytes"]),
                   float(info["used_cpu_user"]) + float(info["used_cpu_sys"]))


@dataclass(frozen=True)
class Figures:
    body_bytes: int
    in_flight: int
    median_ms: float
    p95_ms: float
    received_per_poll: float
    sent_per_poll: float
    server_cpu_ms: float
    used_memory_mb: float
    first_ms: float
    first_server_cpu_ms: float


@dataclass(frozen=True)
class Polls:
    first: float
    before_first: Server
    after_first: Server
    times: list[float]
    in_flight: int


def fill(url: str, messages: int, payload: str) -> tuple[Connection, int]:
    """``messages`` tasks delivered and left unacknowledged; the consumer's connection
    (closing it would restore them) and one message's body size."""
    app = Celery("bench", broker=url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            for _ in range(messages):
                app.send_task("metamapper.noop", args=[payload], queue=QUEUE,
                              producer=producer)
    finally:
        app.close()
    consumer = Connection(url)
    channel = consumer.default_channel
    size = 0
    for _ in range(messages):
        # Delivered, not acknowledged: kombu keeps it in unacked, as for a worker.
        message = channel.basic_get(QUEUE, no_ack=False)
        if message is None:
            raise SystemExit("fewer messages in the queue than sent")
        size = len(message.body)
    return consumer, size


async def polls(url: str, count: int) -> Polls:
    probe = RedisProbe(BrokerAccess(transport="redis", url=url), timeout=60)
    try:
        before = Server.take(url)
        started = time.perf_counter()
        await probe.measure({QUEUE})   # connects and reads every entry once
        first = time.perf_counter() - started
        after_first = Server.take(url)
        times = []
        depth = None
        for _ in range(count):
            started = time.perf_counter()
            depth = (await probe.measure({QUEUE}))[QUEUE]
            times.append(time.perf_counter() - started)
        assert depth is not None and depth.waiting == 0 and depth.in_flight is not None, depth
        return Polls(first, before, after_first, times, depth.in_flight)
    finally:
        await probe.close()


def run(root: Path, messages: int, count: int, payload: str) -> Figures:
    with redis_server(root) as url:
        say(f"  {messages} messages of {len(payload)} payload bytes in flight ...")
        consumer, size = fill(url, messages, payload)
        try:
            client = redis.Redis.from_url(url)
            memory = int(client.info("memory")["used_memory"]) / 2**20
            client.close()
            measured = asyncio.run(polls(url, count))
            after = Server.take(url)
        finally:
            consumer.release()
    if measured.in_flight != messages:
        raise SystemExit(f"the probe saw {measured.in_flight} of {messages} messages in flight")
    steady = measured.after_first
    first_cpu = steady.cpu - measured.before_first.cpu
    return Figures(size, measured.in_flight, 1000 * percentile(measured.times, 50),
                   1000 * percentile(measured.times, 95),
                   (after.received - steady.received) / count,
                   (after.sent - steady.sent) / count, 1000 * (after.cpu - steady.cpu) / count,
                   memory, 1000 * measured.first, 1000 * first_cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=50)
    parser.add_argument("--large-kib", type=int, default=16)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as tmp:
        for n, payload in enumerate(("", "x" * (args.large_kib * 1024))):
            results.append(run(Path(tmp) / f"redis-{n}", args.messages, args.polls, payload))
    print(f"\nRedis probe, {args.messages} messages in flight, {args.polls} polls each")
    print_table(["message body", "in flight seen", "first poll ms",
                 "first poll server CPU ms", "poll median ms", "poll p95 ms",
                 "bytes to server / poll", "bytes from server / poll",
                 "server CPU ms / poll", "Redis memory MB"], [
        [f"{r.body_bytes} B", r.in_flight, f"{r.first_ms:.1f}", f"{r.first_server_cpu_ms:.1f}",
         f"{r.median_ms:.1f}", f"{r.p95_ms:.1f}", f"{r.received_per_poll:.0f}",
         f"{r.sent_per_poll:.0f}", f"{r.server_cpu_ms:.1f}", f"{r.used_memory_mb:.0f}"]
        for r in results])
    small, large = results
    moved = [r.received_per_poll + r.sent_per_poll for r in results]
    print(f"\nlarge / small: poll time {large.median_ms / small.median_ms:.2f}x, bytes "
          f"moved {moved[1] / moved[0]:.2f}x, "
          f"server CPU {large.server_cpu_ms / small.server_cpu_ms:.2f}x")


if __name__ == "__main__":
    main()
