"""The RabbitMQ probes (management API and AMQP) against a real RabbitMQ."""

from __future__ import annotations

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
    assert probe.round_trips == 1


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
    (management_through, services.RABBITMQ_MANAGEMENT_PORT, 1),
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
