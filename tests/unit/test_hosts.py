"""Which name of a broker the operator dials: the fleet's namespace's or the one written."""

from __future__ import annotations

import socket

import pytest

from metamapper_operator.brokers.hosts import dialled, resolves
from metamapper_operator.references import BrokerAccess

NAMESPACED = "redis://:pw@redis.team.svc:6379/0"
WRITTEN = "redis://:pw@redis:6379/0"


def _access(url: str = NAMESPACED, written: str | None = WRITTEN) -> BrokerAccess:
    return BrokerAccess(transport="redis", url=url, written_url=written)


def _known(*hosts: str) -> set[str]:
    return set(hosts)


def test_the_name_in_the_fleets_namespace_is_dialled_when_it_resolves() -> None:
    known = _known("redis.team.svc", "redis")
    assert dialled(_access(), known.__contains__).url == NAMESPACED


def test_a_short_name_that_is_no_service_is_dialled_as_written() -> None:
    # resolved by the node's search domains or /etc/hosts, not as a Service
    assert dialled(_access(), _known("redis").__contains__).url == WRITTEN


def test_when_neither_resolves_the_error_names_what_the_pods_resolve() -> None:
    assert dialled(_access(), _known().__contains__).url == NAMESPACED


def test_a_failover_list_falls_back_only_when_every_written_host_resolves() -> None:
    access = _access("redis://a.team.svc:1/0;redis://b.team.svc:2/0",
                     "redis://a:1/0;redis://b:2/0")
    assert dialled(access, _known("a").__contains__).url == access.url
    assert dialled(access, _known("a", "b").__contains__).url == "redis://a:1/0;redis://b:2/0"


def test_the_management_url_falls_back_on_its_own() -> None:
    access = BrokerAccess(transport="rabbitmq", url="amqp://u:p@rabbit.other:5672/vh",
                          management_url="http://rabbit.team.svc:15672",
                          written_management_url="http://rabbit:15672")
    chosen = dialled(access, _known("rabbit", "rabbit.other").__contains__)
    assert (chosen.url, chosen.management_url) == (access.url, "http://rabbit:15672")


def test_a_url_used_as_written_is_not_looked_up() -> None:
    def never(host: str) -> bool:
        raise AssertionError(f"looked up {host}")

    access = _access(WRITTEN, None)
    assert dialled(access, never) is access


def test_the_resolver_is_asked() -> None:
    assert resolves("localhost")
    assert resolves("[::1]") == resolves("::1")   # IPv6 written in brackets, as in a URL


def test_only_a_name_that_does_not_exist_fails_to_resolve(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(host: str, port: object) -> list[object]:
        code = {"gone": socket.EAI_NONAME, "slow": socket.EAI_AGAIN}[host]
        raise socket.gaierror(code, "resolver says no")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert not resolves("gone")
    assert resolves("slow")   # a resolver that did not answer keeps the namespaced name
