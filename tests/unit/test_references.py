"""References: the credentials a fleet's Secrets and URLs give the operator."""

from __future__ import annotations

import asyncio

from metamapper_operator.model import parse
from metamapper_operator.references import resolve
from tests.unit.sample import body


def test_management_credentials_from_the_broker_url_are_decoded() -> None:
    raw = body(broker={"urlSecretRef": {"name": "broker"},
                       "rabbitmq": {"managementURL": "http://rabbit:15672"}},
               scheduler={"lock": {"redisURL": "redis://lock:6379/0"}})

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return {"url": "amqp://user:p%40ss%2Fw%25rd@rabbit:5672/vh"}

    access = asyncio.run(resolve(parse(raw), read))
    assert (access.management_user, access.management_password) == ("user", "p@ss/w%rd")
