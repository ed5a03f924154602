"""What every probe shares: which probe a broker gets, and failing fast and cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from metamapper_operator.brokers import ProbeError, probe_for
from metamapper_operator.brokers.base import Probe, probe_error, secrets_of
from metamapper_operator.brokers.rabbitmq import AmqpProbe, ManagementProbe
from metamapper_operator.brokers.redis import RedisProbe
from metamapper_operator.brokers.sqs import SqsProbe
from metamapper_operator.references import BrokerAccess
from metamapper_urls import scrub
from tests.brokers.relay import silent_server

SECRET = "s3cret/pw+x"  # a '/' and a '+', so the URL must percent-encode it
ENCODED = "s3cret%2Fpw%2Bx"

ACCESS: dict[str, Callable[[int], BrokerAccess]] = {
    "redis": lambda port: BrokerAccess(transport="redis", url=f"redis://:{ENCODED}@127.0.0.1:{port}/2"),
    "amqp": lambda port: BrokerAccess(transport="rabbitmq", url=f"amqp://mm:{ENCODED}@127.0.0.1:{port}/v"),
    "management": lambda port: BrokerAccess(
        transport="rabbitmq", url=f"amqp://mm:{ENCODED}@127.0.0.1:{port}/v",
        management_url=f"http://127.0.0.1:{port}", management_user="mm",
        management_password=SECRET),
    "sqs": lambda port: BrokerAccess(
        transport="sqs", url=f"sqs://AKIDEXAMPLE:{ENCODED}@127.0.0.1:{port}", region="eu-west-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET),
}


def test_each_broker_gets_its_probe() -> None:
    kinds = {name: type(probe_for(make(1))) for name, make in ACCESS.items()}
    assert kinds == {"redis": RedisProbe, "amqp": AmqpProbe, "management": ManagementProbe,
                     "sqs": SqsProbe}


def test_scrub_removes_every_spelling_of_the_secret() -> None:
    access = ACCESS["sqs"](1)
    text = f"failed {access.url} with {SECRET} and {ENCODED} and s3cret%2fpw%2bx"
    cleaned = scrub(text, secrets_of(access))
    assert SECRET not in cleaned and ENCODED not in cleaned
    # Lower-case percent-encoding is not a spelling the URL holds.
    assert cleaned == "failed *** with *** and *** and s3cret%2fpw%2bx"


def assert_clean(err: ProbeError) -> None:
    message = str(err)
    assert SECRET not in message and ENCODED not in message, message
    assert "127.0.0.1" in message, message


async def failure(probe: Probe) -> ProbeError:
    """The :class:`ProbeError` of one measurement (a hang past 30 s fails the test)."""
    try:
        with pytest.raises(ProbeError) as raised:
            await asyncio.wait_for(probe.measure(["default"]), 30)
    finally:
        await probe.close()
    return raised.value


@pytest.mark.parametrize("kind", list(ACCESS))
async def test_unreachable_broker_raises_probe_error(kind: str, closed_port: int) -> None:
    assert_clean(await failure(probe_for(ACCESS[kind](closed_port), timeout=2)))


@pytest.mark.parametrize("kind", list(ACCESS))
async def test_a_hung_broker_times_out(kind: str) -> None:
    async with silent_server() as port:
        assert_clean(await failure(probe_for(ACCESS[kind](port), timeout=0.5)))


@pytest.mark.parametrize("kind", list(ACCESS))
def test_a_probe_errors_address_is_scrubbed_too(kind: str) -> None:
    """Even a call site that names the broker by its raw URL shows no credential."""
    access = ACCESS[kind](1)
    for where in (access.url, access.management_url or "", access.display):
        assert_clean(probe_error(access, f"{kind} {where} 127.0.0.1", OSError(SECRET)))


def test_an_address_without_credentials_stays_readable() -> None:
    access = BrokerAccess(transport="redis", url="redis://127.0.0.1:1/2")
    error = probe_error(access, f"redis {access.display}", OSError("refused"))
    assert str(error) == "redis redis://127.0.0.1:1/2: OSError: refused"


async def test_a_failover_url_shows_no_password_of_any_of_its_brokers(
        closed_port: int) -> None:
    access = BrokerAccess(transport="rabbitmq", url=(
        f"amqp://mm:{ENCODED}@127.0.0.1:{closed_port}/v;amqp://mm:other-pw@127.0.0.1:1/v"))
    error = await failure(probe_for(access, timeout=2))
    assert_clean(error)
    assert "other-pw" not in str(error)
