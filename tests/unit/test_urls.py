"""The one URL reader: decoded credentials, checked ports, redaction of every credential."""

from __future__ import annotations

import asyncio
import copy

import pytest

from metamapper_operator.brokers.base import scrub, secrets_of
from metamapper_operator.model import SpecError, parse
from metamapper_operator.references import BrokerAccess, resolve
from metamapper_operator.status import DeploymentState, Observed, render
from metamapper_operator.urls import URLError, parse_url, redact
from tests.unit.test_builders import BODY, body


def test_credentials_are_percent_decoded() -> None:
    parsed = parse_url("amqp://us%2Fer:p%40ss%2Fw%25rd@rabbit:5672/v%2Fh")
    assert (parsed.username, parsed.password, parsed.path) == ("us/er", "p@ss/w%rd", "v/h")


def test_management_credentials_from_the_broker_url_are_decoded() -> None:
    raw = body(broker={"urlSecretRef": {"name": "broker"},
                       "rabbitmq": {"managementURL": "http://rabbit:15672"}},
               scheduler={"lock": {"redisURL": "redis://lock:6379/0"}})

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return {"url": "amqp://user:p%40ss%2Fw%25rd@rabbit:5672/vh"}

    access = asyncio.run(resolve(parse(raw), read))
    assert (access.management_user, access.management_password) == ("user", "p@ss/w%rd")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://:pw@r:99999/0"])
def test_a_port_no_client_can_use_is_an_invalid_spec(url: str) -> None:
    with pytest.raises(URLError, match="port"):
        parse_url(url)
    with pytest.raises(SpecError) as raised:
        parse(body(broker={"url": url}))
    assert "port" in raised.value.message and "pw" not in raised.value.message


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://r:6379/0?password=s3cret&db=1", "redis://r:6379/0?password=***&db=1"),
    ("redis://:pw@r:6379/0?socket_timeout=1", "redis://:***@r:6379/0?socket_timeout=1"),
    ("sqs://AKIAKEYID:s3cret@", "sqs://***:***@"),
    ("sqs://AKIAKEYID:s3cret@localhost:4566", "sqs://***:***@localhost:4566"),
])
def test_every_credential_of_a_url_is_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_error_messages_lose_query_passwords_and_key_ids() -> None:
    access = BrokerAccess("redis", "redis://r:6379/0?password=p%40ss")
    message = "auth failed for redis://r:6379/0?password=p%40ss (password p@ss)"
    assert "p@ss" not in scrub(message, secrets_of(access))
    sqs = BrokerAccess("sqs", "sqs://", aws_access_key_id="AKIAKEYID",
                       aws_secret_access_key="s3cret")
    assert scrub("InvalidClientTokenId: AKIAKEYID", secrets_of(sqs)) == (
        "InvalidClientTokenId: ***")


def test_an_unreachable_broker_makes_the_object_not_ready() -> None:
    fleet = parse(copy.deepcopy(BODY))
    deps = {name: DeploymentState(name, "h", 1, ready=1, updated=1, generation=1,
                                  observed_generation=1)
            for name in ("mm-default", "mm-scheduler")}
    status = render(Observed(3, "t", fleet, "redis", broker_error="redis r: refused",
                             deployments=deps), {})
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "BrokerUnreachable"
    assert conditions["BrokerUnreachable"]["status"] == "True"
