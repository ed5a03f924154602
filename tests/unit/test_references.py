"""References: the credentials a fleet's Secrets and URLs give the operator."""

from __future__ import annotations

import asyncio

import pytest

from metamapper_operator.model import SpecError, parse
from metamapper_operator.references import ReadSecret, resolve
from tests.unit.sample import body


def test_management_credentials_from_the_broker_url_are_decoded() -> None:
    raw = body(broker={"urlSecretRef": {"name": "broker"},
                       "rabbitmq": {"managementURL": "http://rabbit:15672"}},
               scheduler={"lock": {"redisURL": "redis://lock:6379/0"}})

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return {"url": "amqp://user:p%40ss%2Fw%25rd@rabbit:5672/vh"}

    access = asyncio.run(resolve(parse(raw), read))
    assert (access.management_user, access.management_password) == ("user", "p@ss/w%rd")


def _reader(secrets: dict[str, dict[str, str]]) -> ReadSecret:
    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return secrets.get(name)
    return read


@pytest.mark.parametrize("value", ["hunter2:with-a-colon", "s3cret", "s3cret://host",
                                   "redis://host:s3cret/0", "redis://h/0 s3cret",
                                   "amqp://h//;s3cret://x"])
def test_a_secret_value_that_is_no_broker_url_is_never_shown(value: str) -> None:
    raw = body(broker={"urlSecretRef": {"name": "broker"}})
    with pytest.raises(SpecError) as raised:
        asyncio.run(resolve(parse(raw), _reader({"broker": {"url": value}})))
    assert raised.value.field == "spec.broker.urlSecretRef"
    assert "Secret 'broker'" in raised.value.message
    for part in ("hunter2", "s3cret"):
        assert part not in str(raised.value)
