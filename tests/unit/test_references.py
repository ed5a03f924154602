"""References: the credentials a fleet's Secrets and URLs give the operator."""

from __future__ import annotations

import asyncio

import pytest

from metamapper_operator.builders import Part
from metamapper_operator.model import SpecError, parse
from metamapper_operator.references import ReadSecret, held_parts, resolve, short_tls_notice
from tests.unit.sample import body


def test_management_credentials_from_the_broker_url_are_decoded() -> None:
    raw = body(broker={"urlSecretRef": {"name": "broker"},
                       "rabbitmq": {"managementURL": "http://rabbit:15672"}},
               scheduler={"lock": {"redisURL": "redis://lock:6379/0"}})

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return {"url": "amqp://user:p%40ss%2Fw%25rd@rabbit:5672/vh"}

    access = asyncio.run(resolve(parse(raw), read))
    assert (access.management_user, access.management_password) == ("user", "p@ss/w%rd")


def test_the_operator_reaches_a_short_service_name_in_the_fleets_namespace() -> None:
    raw = body(broker={"urlSecretRef": {"name": "broker"},
                       "rabbitmq": {"managementURL": "http://rabbit:15672"}})
    raw["metadata"]["namespace"] = "team"

    async def read(namespace: str, name: str) -> dict[str, str] | None:
        return {"url": "amqp://user:pw@rabbit:5672/vh"}

    access = asyncio.run(resolve(parse(raw), read, "metamapper-system"))
    assert access.url == "amqp://user:pw@rabbit.team.svc:5672/vh"
    assert access.management_url == "http://rabbit.team.svc:15672"
    # the names as written stay beside them, for a name that is no Service
    assert access.written_url == "amqp://user:pw@rabbit:5672/vh"
    assert access.written_management_url == "http://rabbit:15672"


def _team_fleet(url: str, management_url: str | None = None) -> tuple[dict, ReadSecret]:
    broker: dict = {"urlSecretRef": {"name": "broker"}}
    if management_url is not None:
        broker["rabbitmq"] = {"managementURL": management_url}
    raw = body(broker=broker)
    raw["metadata"]["namespace"] = "team"
    return raw, _reader({"broker": {"url": url}})


def test_a_fleet_in_the_operators_own_namespace_is_reached_as_written() -> None:
    raw, read = _team_fleet("rediss://:pw@redis:6380/0")
    access = asyncio.run(resolve(parse(raw), read, "team"))
    assert (access.url, access.written_url) == ("rediss://:pw@redis:6380/0", None)
    raw, read = _team_fleet("amqp://u:p@rabbit:5672/vh", "http://rabbit:15672")
    access = asyncio.run(resolve(parse(raw), read, "team"))
    assert (access.url, access.management_url) == ("amqp://u:p@rabbit:5672/vh",
                                                   "http://rabbit:15672")


def test_a_tls_url_keeps_the_host_its_certificate_is_checked_against() -> None:
    raw, read = _team_fleet("amqps://u:p@rabbit:5671/vh", "https://rabbit:15671")
    access = asyncio.run(resolve(parse(raw), read, "metamapper-system"))
    assert (access.url, access.written_url) == ("amqps://u:p@rabbit:5671/vh", None)
    assert (access.management_url, access.written_management_url) == (
        "https://rabbit:15671", None)


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


OPTIONAL = body(broker={"urlSecretRef": {"name": "broker"}},
                celery={"resultBackendSecretRef": {"name": "results"}},
                flower={"enabled": True, "basicAuthSecretRef": {"name": "flower-auth"}},
                scheduler={"lock": {"redisURLSecretRef": {"name": "lock"}}})
BROKER = {"broker": {"url": "redis://:pw@r:6379/0"}}


def test_a_missing_optional_secret_holds_back_only_its_part() -> None:
    fleet = parse(OPTIONAL)
    read = _reader(BROKER)
    access = asyncio.run(resolve(fleet, read))   # the pools get their broker access
    assert access.transport == "redis"
    held = asyncio.run(held_parts(fleet, read))
    assert {h.part: h.message.split(":")[0] for h in held} == {
        Part.SCHEDULER: "spec.scheduler.lock.redisURLSecretRef",
        Part.RESULT_BACKEND: "spec.celery.resultBackendSecretRef",
        Part.FLOWER: "spec.flower.basicAuthSecretRef"}
    assert all("the worker pools run" in h.message for h in held)
    flower = next(h for h in held if h.part == Part.FLOWER)
    assert "Secret 'flower-auth' not found" in flower.message


def test_optional_parts_run_once_their_secrets_exist() -> None:
    read = _reader({**BROKER, "results": {"url": "redis://:pw@r:6379/1"},
                    "flower-auth": {"auth": "u:p"}, "lock": {"wrong-key": "x"}})
    held = asyncio.run(held_parts(parse(OPTIONAL), read))
    assert [(h.part, "has no key 'url'" in h.message) for h in held] == [(Part.SCHEDULER, True)]


def test_a_short_tls_host_outside_the_operators_namespace_is_named_never_its_url() -> None:
    raw, read = _team_fleet("rediss://:s3cret@redis:6380/0", "https://rabbit:15671")
    fleet = parse(raw)
    access = asyncio.run(resolve(fleet, read, "metamapper-system"))
    notice = short_tls_notice(fleet, access, "metamapper-system")
    assert notice is not None
    assert "rabbit.team.svc, redis.team.svc" in notice and "s3cret" not in notice
    assert short_tls_notice(fleet, access, "team") is None
