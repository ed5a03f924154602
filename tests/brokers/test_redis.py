"""The Redis probe against a real Redis and real Celery messages and workers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from celery import Celery

from devenv import services
from devenv.controlplane import free_port
from devenv.processes import stop_groups
from devenv.waiting import wait_until
from metamapper_operator.brokers import ProbeError, QueueDepth, probe_for
from metamapper_operator.brokers.redis import RedisProbe
from metamapper_operator.model import parse
from metamapper_operator.references import BrokerAccess, RedisLayout, resolve
from tests.brokers.relay import relay

PASSWORD = "s3cret-redis-pw"


def queues(*names: str) -> list[str]:
    """Queue names of this test's own, so no other test's messages can be counted."""
    tag = uuid.uuid4().hex[:8]
    return [f"{name}-{tag}" for name in names]


def send(app: Celery, queue: str, count: int, **options: Any) -> None:
    for _ in range(count):
        app.send_task("metamapper.health.heartbeat", queue=queue, **options)


async def measure_once(access: BrokerAccess, names: list[str], **kwargs: Any
                       ) -> dict[str, QueueDepth]:
    probe = RedisProbe(access, **kwargs)
    try:
        return await probe.measure(names)
    finally:
        await probe.close()


async def test_every_queue_and_its_priority_keys_in_one_call(
        redis_url: str, publisher: Callable[..., Celery]) -> None:
    default, checks, usage = queues("default", "checks", "usage")
    app = publisher(redis_url)
    send(app, default, 3)
    send(app, checks, 2, priority=9)
    send(app, checks, 1, priority=5)
    raw = redis.Redis.from_url(redis_url)
    # Where kombu put them: the lowest step in the queue's key, the others in q\x06\x16N.
    assert [raw.llen(k) for k in (checks, f"{checks}\x06\x163", f"{checks}\x06\x169")] == [0, 1, 2]

    probe = probe_for(BrokerAccess(transport="redis", url=redis_url))
    try:
        depths = await probe.measure([default, checks, usage])
        assert probe.round_trips == 1
    finally:
        await probe.close()
    assert depths == {
        default: QueueDepth(waiting=3, in_flight=0),
        checks: QueueDepth(waiting=3, in_flight=0),
        usage: QueueDepth(waiting=0, in_flight=0),
    }
    assert probe.source == "redis: LLEN + priority keys + unacked (older than 1200 s not counted)"


async def test_global_key_prefix_and_database_number(
        redis_url: str, publisher: Callable[..., Celery]) -> None:
    (default,) = queues("default")
    send(publisher(redis_url, global_keyprefix="mm-test:"), default, 2)
    assert redis.Redis.from_url(redis_url).llen(f"mm-test:{default}") == 2

    prefixed = BrokerAccess(
        transport="redis", url=redis_url, redis=RedisLayout(key_prefix="mm-test:")
    )
    assert await measure_once(prefixed, [default]) == {default: QueueDepth(waiting=2, in_flight=0)}
    assert await measure_once(BrokerAccess(transport="redis", url=redis_url), [default]) == {
        default: QueueDepth(waiting=0, in_flight=0)}
    parts = urlsplit(redis_url)
    database = int(parts.path.strip("/"))
    other = parts._replace(path=f"/{database % 255 + 1}").geturl()
    assert await measure_once(BrokerAccess(transport="redis", url=other, redis=RedisLayout(
        key_prefix="mm-test:")), [default]) == {default: QueueDepth(waiting=0, in_flight=0)}


async def fleet_access(redis_url: str, **settings: Any) -> BrokerAccess:
    """The probe's access as the operator resolves it for a fleet with ``settings``."""
    raw = {"metadata": {"namespace": "ns", "name": "mm"}, "spec": {
        "image": "worker:1", "broker": {"url": redis_url}, "celery": {"settings": settings},
        "pools": [{"name": "default", "queues": ["default"]}]}}

    async def no_secrets(namespace: str, name: str) -> None:
        return None

    return await resolve(parse(raw), no_secrets)


async def test_the_fleets_own_transport_options_are_followed(
        redis_url: str, publisher: Callable[..., Celery]) -> None:
    """Celery's docs suggest priority_steps=list(range(10)) and sep=':'; every message
    counts, under the settings' global_keyprefix."""
    (checks,) = queues("checks")
    options = {"priority_steps": list(range(10)), "sep": ":", "global_keyprefix": "fleet:"}
    app = publisher(redis_url, **options)
    for priority in (0, 4, 7):
        send(app, checks, 1, priority=priority)
    assert redis.Redis.from_url(redis_url).llen(f"fleet:{checks}:4") == 1
    access = await fleet_access(redis_url, broker_transport_options=options)
    assert await measure_once(access, [checks]) == {checks: QueueDepth(waiting=3, in_flight=0)}


async def test_in_flight_from_a_real_worker(
        redis_url: str, publisher: Callable[..., Celery], worker: Callable[..., Any],
        tmp_path: Path) -> None:
    checks, usage = queues("checks", "usage")
    prefix = "mm-fleet:"
    worker(redis_url, checks, concurrency=2, global_keyprefix=prefix)
    app = publisher(redis_url, global_keyprefix=prefix)
    for _ in range(5):
        app.send_task("tests.brokers.hold", args=[str(tmp_path)], queue=checks)
    send(app, usage, 2)
    # Two processes, prefetch 1 and late acks: two messages delivered and held.
    wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 2, what="two tasks started")

    probe = probe_for(
        BrokerAccess(transport="redis", url=redis_url, redis=RedisLayout(key_prefix=prefix))
    )
    try:
        assert await probe.measure([checks, usage]) == {
            checks: QueueDepth(waiting=3, in_flight=2), usage: QueueDepth(waiting=2, in_flight=0)}
        (tmp_path / "release").touch()
        for _ in range(300):
            if (await probe.measure([checks]))[checks] == QueueDepth(waiting=0, in_flight=0):
                break
            await asyncio.sleep(0.1)
        assert (await probe.measure([checks]))[checks] == QueueDepth(waiting=0, in_flight=0)
    finally:
        await probe.close()
    assert len(list(tmp_path.glob("started-*"))) == 5


async def test_entries_older_than_the_task_time_limit_are_stale_not_in_flight(
        redis_url: str) -> None:
    """kombu's unacked hash and unacked_index delivery times, as a worker that died (OOM
    kill, node loss) leaves them: counted as stale, not in flight; a large message body
    costs the script nothing more than a small one."""
    (checks,) = queues("checks")
    raw = redis.Redis.from_url(redis_url)
    now = time.time()
    body = json.dumps({"body": "x" * 200_000})
    for tag, delivered in (("fresh-1", now - 5), ("fresh-2", now - 100),
                           ("dead-1", now - 1300), ("dead-2", now - 3000)):
        raw.hset("unacked", tag, json.dumps([json.loads(body), checks, checks]))
        raw.zadd("unacked_index", {tag: delivered})
    access = await fleet_access(redis_url, task_time_limit=1200)
    assert access.redis.in_flight_max_age == 1200
    assert await measure_once(access, [checks]) == {
        checks: QueueDepth(waiting=0, in_flight=2, stale=2)}


async def test_one_round_trip_per_measurement_on_the_wire(
        redis_url: str, publisher: Callable[..., Celery]) -> None:
    """Also with a queue that cannot be measured among them."""
    names = queues("default", "checks", "revisioner", "usage")
    for name in names:
        send(publisher(redis_url), name, 1, priority=9)
    (hashed,) = queues("hashed")
    redis.Redis.from_url(redis_url).hset(hashed, "field", "value")
    parts = urlsplit(redis_url)
    async with relay(parts.port or 6379) as wire:
        probe = probe_for(BrokerAccess(
            transport="redis", url=parts._replace(netloc=f"127.0.0.1:{wire.port}").geturl()))
        try:
            await probe.measure(names)  # connects: AUTH/SELECT/CLIENT SETINFO go first
            before, counted = wire.exchanges, probe.round_trips
            for _ in range(3):
                depths = await probe.measure([*names, hashed])
            assert wire.exchanges - before == 3
            assert probe.round_trips - counted == 3
            assert list(probe.failed) == [hashed]
        finally:
            await probe.close()
    assert depths == {name: QueueDepth(waiting=1, in_flight=0) for name in names}


class PrivateRedis:
    """A password-protected redis-server of this test's own, to stop and start."""

    def __init__(self, home: Path) -> None:
        self.port, self.home, self.pids = free_port(), home, list[int]()

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/3"

    def start(self) -> None:
        binary = services.require("redis-server", "redis-server")
        log = self.home / "redis.log"
        self.pids.append(services.spawn(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--requirepass", PASSWORD], log))
        services.wait_for(lambda: services.port_open(self.port), "private redis", 30, log,
                          self.pids[-1])

    def stop(self) -> None:
        stop_groups(self.pids, grace=5)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    found = PrivateRedis(tmp_path)
    yield found
    found.stop()


async def test_unreachable_redis_then_recovery(
        private_redis: PrivateRedis, publisher: Callable[..., Celery]) -> None:
    (default,) = queues("default")
    probe = probe_for(BrokerAccess(transport="redis", url=private_redis.url))
    try:
        with pytest.raises(ProbeError) as refused:
            await probe.measure([default])
        assert PASSWORD not in str(refused.value)
        assert f"127.0.0.1:{private_redis.port}" in str(refused.value)

        private_redis.start()
        send(publisher(private_redis.url), default, 2)
        assert await probe.measure([default]) == {default: QueueDepth(waiting=2, in_flight=0)}

        private_redis.stop()  # the probe's open connection breaks
        with pytest.raises(ProbeError) as broken:
            await probe.measure([default])
        assert PASSWORD not in str(broken.value)

        private_redis.start()  # empty again: nothing is persisted
        send(publisher(private_redis.url), default, 1)
        assert await probe.measure([default]) == {default: QueueDepth(waiting=1, in_flight=0)}
    finally:
        await probe.close()


async def test_age_of_the_oldest_message_from_its_published_at_header(
        redis_url: str, publisher: Callable[..., Celery]) -> None:
    default, checks, usage, foreign = queues("default", "checks", "usage", "foreign")
    app = publisher(redis_url)
    sent = time.time()
    send(app, default, 1)
    send(app, checks, 1, priority=9)
    time.sleep(1.0)
    send(app, default, 2)
    send(app, checks, 1)  # younger, in another priority list
    # A message from a producer without the header (a bare kombu message).
    redis.Redis.from_url(redis_url).lpush(foreign, json.dumps(
        {"body": "e30=", "headers": {}, "properties": {}}))
    depths = await measure_once(BrokerAccess(transport="redis", url=redis_url),
                                [default, checks, usage, foreign])
    waited = time.time() - sent
    for queue in (default, checks):
        age = depths[queue].oldest_age
        assert age is not None and 1.0 <= age <= waited + 0.01, (queue, age)
    assert depths[usage].oldest_age == 0.0
    assert depths[foreign].oldest_age is None
    assert depths[foreign].waiting == 1


def deliver(raw: redis.Redis, queue: str, delivered: float, body_bytes: int = 16_384,
            tag: str | None = None) -> str:
    """An entry as kombu leaves a delivered, unacknowledged message; its tag."""
    tag = tag or str(uuid.uuid4())
    message = {"body": "x" * body_bytes, "properties": {"delivery_tag": tag}}
    raw.hset("unacked", tag, json.dumps([message, queue, queue]))
    raw.zadd("unacked_index", {tag: delivered})
    return tag


def acknowledge(raw: redis.Redis, tag: str) -> None:
    """What kombu's ack does: both indices in one transaction."""
    raw.pipeline(transaction=True).zrem("unacked_index", tag).hdel("unacked", tag).execute()


def hget_calls(raw: redis.Redis) -> int:
    """HGETs the server ran, scripts' included (INFO commandstats)."""
    return int(raw.info("commandstats").get("cmdstat_hget", {}).get("calls", 0))


async def test_known_entries_are_not_read_again_and_counts_follow_the_index(
        private_redis: PrivateRedis) -> None:
    """Each unacknowledged entry is loaded once (the server's own HGET count says so);
    entries acknowledged are forgotten, new ones read once, and an entry known from
    before turns stale by its delivery time alone."""
    private_redis.start()
    checks, usage = queues("checks", "usage")
    raw = redis.Redis.from_url(private_redis.url)
    now = time.time()
    tags = [deliver(raw, checks, now - 10) for _ in range(5)]
    tags += [deliver(raw, usage, now - 10) for _ in range(3)]
    old = deliver(raw, usage, now - 1300)
    foreign = str(uuid.uuid4())  # no routing key to find: counted nowhere, read once
    raw.hset("unacked", foreign, "not json")
    raw.zadd("unacked_index", {foreign: now})
    clock = [now]
    access = BrokerAccess(transport="redis", url=private_redis.url,
                          redis=RedisLayout(in_flight_max_age=1200))
    probe = RedisProbe(access, clock=lambda: clock[0])
    try:
        raw.config_resetstat()
        first = await probe.measure([checks, usage])
        assert first == {checks: QueueDepth(waiting=0, in_flight=5),
                         usage: QueueDepth(waiting=0, in_flight=3, stale=1)}
        assert (probe.entries_read, hget_calls(raw)) == (10, 10)
        assert len(probe.known_tags) == 10

        assert await probe.measure([checks, usage]) == first
        assert (probe.entries_read, hget_calls(raw)) == (10, 10)

        acknowledge(raw, tags[0])
        acknowledge(raw, old)
        acknowledge(raw, foreign)
        added = [deliver(raw, checks, now - 1), deliver(raw, usage, now - 1)]
        assert await probe.measure([checks, usage]) == {
            checks: QueueDepth(waiting=0, in_flight=5),
            usage: QueueDepth(waiting=0, in_flight=4)}
        assert (probe.entries_read, hget_calls(raw)) == (12, 12)
        assert len(probe.known_tags) == 9

        clock[0] = now + 1195  # the first eight are now past the time limit
        assert await probe.measure([checks, usage]) == {
            checks: QueueDepth(waiting=0, in_flight=1, stale=4),
            usage: QueueDepth(waiting=0, in_flight=1, stale=3)}
        assert (probe.entries_read, hget_calls(raw)) == (12, 12)
        acknowledge(raw, added[0])
        assert (await probe.measure([checks]))[checks] == QueueDepth(
            waiting=0, in_flight=0, stale=4)
    finally:
        await probe.close()

    restarted = RedisProbe(access, clock=lambda: clock[0])
    try:
        assert (await restarted.measure([usage]))[usage] == QueueDepth(
            waiting=0, in_flight=1, stale=3)
        assert (restarted.entries_read, hget_calls(raw)) == (8, 20)  # once, after a restart
    finally:
        await restarted.close()


async def test_entries_beyond_the_limit_are_read_every_poll_and_still_counted(
        redis_url: str) -> None:
    (checks,) = queues("checks")
    raw = redis.Redis.from_url(redis_url)
    layout = RedisLayout(key_prefix=f"{checks}:")
    for _ in range(4):
        tag = str(uuid.uuid4())
        raw.hset(f"{checks}:unacked", tag, json.dumps([{}, checks, checks]))
        raw.zadd(f"{checks}:unacked_index", {tag: time.time()})
    probe = RedisProbe(BrokerAccess(transport="redis", url=redis_url, redis=layout))
    probe.known_tags.limit = 3
    try:
        for poll in (1, 2):
            assert await probe.measure([checks]) == {checks: QueueDepth(waiting=0,
                                                                        in_flight=4)}
            assert len(probe.known_tags) == 3
            assert probe.entries_read == 4 + (poll - 1)
    finally:
        await probe.close()


def push(raw: redis.Redis, key: str | bytes, count: int) -> None:
    """``count`` messages as kombu leaves them waiting in the list ``key``."""
    for _ in range(count):
        raw.lpush(key, json.dumps({"body": "e30=", "headers": {"published_at": time.time()}}))


async def test_a_key_of_another_type_fails_only_its_queue(redis_url: str) -> None:
    """kombu's own unacked hash, unacked_index sorted set and binding set, a string and a
    priority list of another type: each fails its own queue, named in ``failed`` with the
    key and its type; every other queue is measured in the same round trip."""
    (default,) = queues("default")
    prefix = f"{default}:"
    raw = redis.Redis.from_url(redis_url)
    push(raw, prefix + default, 2)
    raw.hset(prefix + "unacked", "t-1", json.dumps([{}, default, default]))
    raw.zadd(prefix + "unacked_index", {"t-1": time.time()})
    raw.sadd(prefix + "_kombu.binding.celery", "x")
    raw.set(prefix + "plain", "a string")
    push(raw, prefix + "mixed", 1)
    raw.sadd(prefix + "mixed\x06\x169", "not a list")
    probe = RedisProbe(BrokerAccess(transport="redis", url=redis_url,
                                    redis=RedisLayout(key_prefix=prefix)))
    try:
        bad = ["unacked", "unacked_index", "_kombu.binding.celery", "plain", "mixed"]
        assert await probe.measure([default, *bad]) == {
            default: QueueDepth(waiting=2, in_flight=1)}
        assert probe.failed == {
            "unacked": f"WRONGTYPE: key '{prefix}unacked' holds a hash, not a list",
            "unacked_index": f"WRONGTYPE: key '{prefix}unacked_index' holds a zset, not a list",
            "_kombu.binding.celery":
                f"WRONGTYPE: key '{prefix}_kombu.binding.celery' holds a set, not a list",
            "plain": f"WRONGTYPE: key '{prefix}plain' holds a string, not a list",
            "mixed": f"WRONGTYPE: key '{prefix}mixed\\x06\\x169' holds a set, not a list",
        }
        assert probe.round_trips == 1
        assert await probe.measure([default]) == {default: QueueDepth(waiting=2, in_flight=1)}
        assert probe.failed == {}
    finally:
        await probe.close()


async def test_an_unacked_key_of_another_type_leaves_in_flight_unknown(
        redis_url: str) -> None:
    """A list where kombu keeps its unacked hash (a queue named ``unacked`` published to
    before any delivery): the waiting counts still hold, in flight cannot be told."""
    default, checks = queues("default", "checks")
    raw = redis.Redis.from_url(redis_url)
    push(raw, default, 3)
    push(raw, "unacked", 1)
    raw.zadd("unacked_index", {"t-1": time.time()})
    probe = RedisProbe(BrokerAccess(transport="redis", url=redis_url))
    try:
        assert await probe.measure([default, checks]) == {
            default: QueueDepth(waiting=3, in_flight=None),
            checks: QueueDepth(waiting=0, in_flight=None)}
        assert probe.failed == {}
        assert probe.round_trips == 1
    finally:
        await probe.close()


#: Names the CRD admits (``^[^,\s]+$``, at most 200 characters) that are odd for Redis,
#: kombu's separator and the probe's Lua scripts.
STRANGE_NAMES = ["\U0001f600" * 200, "é" * 200, "x" * 200, "a\x00b", "q\x06\x163",
                 "%d%s*?[]", "'\"\\", "{hash}tag", "-", "ü.ñ:ß", "\x7f\x01"]


async def test_the_strangest_names_the_crd_admits_are_measured(redis_url: str) -> None:
    (default,) = queues("default")
    prefix = f"{default}:"
    raw = redis.Redis.from_url(redis_url)
    for n, name in enumerate(STRANGE_NAMES):
        push(raw, prefix + name, n + 1)
    probe = RedisProbe(BrokerAccess(transport="redis", url=redis_url,
                                    redis=RedisLayout(key_prefix=prefix)))
    try:
        depths = await probe.measure(STRANGE_NAMES)
        assert probe.failed == {}
    finally:
        await probe.close()
    # "q\x06\x163" is also the priority-3 list of the queue "q": counted as its own.
    assert {name: depth.waiting for name, depth in depths.items()} == {
        name: n + 1 for n, name in enumerate(STRANGE_NAMES)}


async def test_a_failed_queues_reason_shows_no_credential(
        private_redis: PrivateRedis) -> None:
    private_redis.start()
    named = f"q-{PASSWORD}"  # a name that happens to hold the password
    redis.Redis.from_url(private_redis.url).set(named, "a string")
    probe = RedisProbe(BrokerAccess(transport="redis", url=private_redis.url))
    try:
        assert await probe.measure([named]) == {}
    finally:
        await probe.close()
    assert probe.failed == {named: "WRONGTYPE: key 'q-***' holds a string, not a list"}
