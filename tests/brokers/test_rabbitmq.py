"""The RabbitMQ probes (management API and AMQP) against a real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import amqp
import pytest
from celery import Celery

from devenv import services
from metamapper_operator.brokers import Probe, ProbeError, QueueDepth, probe_for
from metamapper_operator.references import BrokerAccess
from tests.brokers.relay import relay
from tests.conftest import RabbitMQ


def management_access(rabbitmq: RabbitMQ, management_url: str | None = None,
                      password: str | None = None) -> BrokerAccess:
    return BrokerAccess(transport="rabbitmq", url=rabbitmq.amqp_url,
                        management_url=management_url or rabbitmq.management_url,
                        management_user=rabbitmq.user,
                        management_password=password or rabbitmq.password)


def with_port(rabbitmq: RabbitMQ, port: int) -> str:
    """The AMQP URL through a relay on 127.0.0.1:``port``."""
    return rabbitmq.amqp_url.replace(f"@{rabbitmq.host}:{rabbitmq.port}/", f"@127.0.0.1:{port}/")


@pytest.fixture
def backlog(rabbitmq: RabbitMQ, publisher: Callable[..., Celery]) -> Iterator[None]:
    """3 messages ready in ``default``; in ``checks`` 1 ready and 1 delivered to a
    consumer that holds it unacknowledged; ``usage`` never declared."""
    app = publisher(rabbitmq.amqp_url)
    for queue, count in (("default", 3), ("checks", 2)):
        for _ in range(count):
            app.send_task("metamapper.health.heartbeat", queue=queue)
    consumer = amqp.Connection(f"{rabbitmq.host}:{rabbitmq.port}", userid=rabbitmq.user,
                               password=rabbitmq.password, virtual_host=rabbitmq.vhost)
    consumer.connect()
    assert consumer.channel().basic_get("checks", no_ack=False) is not None
    yield
    consumer.close()


async def measured(probe: Probe, queues: list[str]) -> dict[str, QueueDepth]:
    try:
        return await probe.measure(queues)
    finally:
        await probe.close()


async def test_management_api_counts_ready_and_unacked(
        rabbitmq: RabbitMQ, backlog: None) -> None:
    probe = probe_for(management_access(rabbitmq))
    assert probe.source == "rabbitmq management API: ready + unacked"
    assert await measured(probe, ["default", "checks", "usage"]) == {
        "default": QueueDepth(waiting=3, in_flight=0),
        "checks": QueueDepth(waiting=1, in_flight=1),
        "usage": QueueDepth(waiting=0, in_flight=0),
    }
    assert probe.round_trips == 2  # the counts, and the head messages' timestamps


async def test_management_api_tells_the_age_of_the_first_message(
        rabbitmq: RabbitMQ, publisher: Callable[..., Celery]) -> None:
    """The app sets AMQP's timestamp property (whole seconds); RabbitMQ shows the first
    message's as head_message_timestamp."""
    app = publisher(rabbitmq.amqp_url)
    sent = int(time.time())
    app.send_task("metamapper.health.heartbeat", queue="default")
    time.sleep(2.0)
    app.send_task("metamapper.health.heartbeat", queue="default")
    probe = probe_for(management_access(rabbitmq))
    try:
        # A statistic: it shows once the statistics database has sampled the queue (every
        # collect_statistics_interval, 5 s by default).
        deadline = time.monotonic() + 20
        while (depths := await probe.measure(["default", "usage"]))["default"].oldest_age \
                is None and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
    finally:
        await probe.close()
    age = depths["default"].oldest_age
    assert age is not None and 1.0 <= age <= time.time() - sent + 1, age
    assert depths["usage"].oldest_age == 0.0


async def test_amqp_counts_ready_only_and_a_missing_queue_as_empty(
        rabbitmq: RabbitMQ, backlog: None) -> None:
    probe = probe_for(BrokerAccess(transport="rabbitmq", url=rabbitmq.amqp_url))
    assert probe.source == "rabbitmq AMQP passive declare: ready only"
    assert await measured(probe, ["usage", "checks", "default"]) == {
        "usage": QueueDepth(waiting=0, in_flight=None),
        "checks": QueueDepth(waiting=1, in_flight=None),
        "default": QueueDepth(waiting=3, in_flight=None),
    }
    assert probe.round_trips == 3


async def test_management_api_refusal_is_reported_without_the_password(
        rabbitmq: RabbitMQ) -> None:
    probe = probe_for(management_access(rabbitmq, password="wrong-s3cret"))
    with pytest.raises(ProbeError) as refused:
        await measured(probe, ["default"])
    assert "401" in str(refused.value)
    assert "wrong-s3cret" not in str(refused.value)


def amqp_through(rabbitmq: RabbitMQ, port: int) -> BrokerAccess:
    return BrokerAccess(transport="rabbitmq", url=with_port(rabbitmq, port))


def management_through(rabbitmq: RabbitMQ, port: int) -> BrokerAccess:
    return management_access(rabbitmq, management_url=f"http://127.0.0.1:{port}")


@pytest.mark.parametrize(("access_through", "target", "exchanges"), [
    (amqp_through, services.RABBITMQ_PORT, 2),
    (management_through, services.RABBITMQ_MANAGEMENT_PORT, 2),  # counts, timestamps
], ids=["amqp", "management"])
async def test_outage_and_recovery(
        rabbitmq: RabbitMQ, backlog: None, access_through: Callable[..., BrokerAccess],
        target: int, exchanges: int) -> None:
    queues = ["default", "checks"]
    async with relay(target) as wire:
        probe = probe_for(access_through(rabbitmq, wire.port))
        try:
            await wire.stop()  # nothing listens: connection refused
            with pytest.raises(ProbeError) as refused:
                await probe.measure(queues)
            assert rabbitmq.password not in str(refused.value)

            await wire.start()
            first = await probe.measure(queues)
            assert first["default"].waiting == 3
            # The connection stays open: the next measurement is only its requests.
            before = wire.exchanges
            assert await probe.measure(queues) == first
            assert wire.exchanges - before == exchanges

            await wire.stop()  # the open connection is cut
            with pytest.raises(ProbeError) as cut:
                await probe.measure(queues)
            assert rabbitmq.password not in str(cut.value)

            await wire.start()
            assert await probe.measure(queues) == first
        finally:
            await probe.close()


def test_vhost_of_the_url_is_read_like_kombu() -> None:
    import kombu

    from metamapper_operator.brokers.rabbitmq import amqp_address

    for url in ("amqp://u:p@h:1/", "amqp://u:p@h:1//", "amqp://u:p@h:1/vh",
                "amqp://u:p%2F@h:1/%2Fx", "amqp://h", "amqps://h/v"):
        conn: Any = kombu.Connection(url)
        found = amqp_address(url)
        assert (found.host, found.user, found.password, found.vhost) == (
            conn.hostname, conn.userid or "guest", conn.password or "guest",
            conn.virtual_host), url


#: 128 characters (the CRD admits 200), 256 bytes: more than AMQP's short string holds.
LONG = "é" * 128


def declare(rabbitmq: RabbitMQ, names: dict[str, int]) -> amqp.Connection:
    """Each queue of ``names`` declared and holding that many messages; the connection."""
    connection = amqp.Connection(f"{rabbitmq.host}:{rabbitmq.port}", userid=rabbitmq.user,
                                 password=rabbitmq.password, virtual_host=rabbitmq.vhost)
    connection.connect()
    channel = connection.channel()
    for name, count in names.items():
        channel.queue_declare(name, durable=False, auto_delete=False)
        for _ in range(count):
            channel.basic_publish(amqp.Message("{}"), exchange="", routing_key=name)
    return connection


@pytest.mark.parametrize("path", ["management", "amqp"])
async def test_a_name_rabbitmq_cannot_hold_fails_only_its_queue(
        rabbitmq: RabbitMQ, backlog: None, path: str) -> None:
    access = management_access(rabbitmq) if path == "management" else BrokerAccess(
        transport="rabbitmq", url=rabbitmq.amqp_url)
    probe = probe_for(access)
    try:
        depths = await probe.measure(["default", LONG, "amq.reserved"])
        assert probe.failed == {
            LONG: "queue name of 256 bytes: RabbitMQ allows at most 255",
            "amq.reserved": "queue names starting with 'amq.' are reserved by RabbitMQ"}
        assert set(depths) == {"default"} and depths["default"].waiting == 3
        assert probe.round_trips == (2 if path == "management" else 1)  # nothing else sent
        assert set(await probe.measure(["default"])) == {"default"}
        assert probe.failed == {}
    finally:
        await probe.close()


async def test_amqp_a_queue_the_broker_refuses_fails_alone(
        rabbitmq: RabbitMQ, backlog: None) -> None:
    """Another connection's exclusive queue: RabbitMQ closes the channel on the passive
    declare (405 RESOURCE_LOCKED); the queues after it are measured on a new channel."""
    owner = declare(rabbitmq, {})
    owner.channel().queue_declare("held", exclusive=True)
    probe = probe_for(BrokerAccess(transport="rabbitmq", url=rabbitmq.amqp_url))
    try:
        assert await probe.measure(["held", "checks", "default"]) == {
            "checks": QueueDepth(waiting=1, in_flight=None),
            "default": QueueDepth(waiting=3, in_flight=None)}
        assert list(probe.failed) == ["held"]
        assert probe.failed["held"].startswith("ResourceLocked: Queue.declare: (405) ")
        assert rabbitmq.password not in probe.failed["held"]
        assert probe.round_trips == 3
    finally:
        await probe.close()
        owner.close()


#: Names the CRD admits (``^[^,\s]+$``, at most 200 characters) that RabbitMQ holds.
STRANGE_NAMES = ["\U0001f600" * 63, "x" * 200, "a\x00b", "q\x06\x163", "%d%s*?[]", "'\"\\",
                 "{hash}tag", "-", "ü.ñ:ß", "\x7f\x01", "amq"]


@pytest.mark.parametrize("path", ["management", "amqp"])
async def test_the_strangest_names_the_crd_admits_are_measured(
        rabbitmq: RabbitMQ, path: str) -> None:
    connection = declare(rabbitmq, {name: n + 1 for n, name in enumerate(STRANGE_NAMES)})
    access = management_access(rabbitmq) if path == "management" else BrokerAccess(
        transport="rabbitmq", url=rabbitmq.amqp_url)
    try:
        probe = probe_for(access)
        depths = await measured(probe, STRANGE_NAMES)
    finally:
        connection.close()
    assert probe.failed == {}
    assert {name: depth.waiting for name, depth in depths.items()} == {
        name: n + 1 for n, name in enumerate(STRANGE_NAMES)}
