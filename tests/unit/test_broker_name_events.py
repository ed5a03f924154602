"""A TLS broker named by a short host, for a fleet outside the operator's namespace, is
announced once with a Warning event: the operator dials it as written."""

from __future__ import annotations

import asyncio
import copy
from typing import cast

import kopf

from metamapper_operator import handlers
from metamapper_operator.config import Config
from tests.unit.sample import BODY
from tests.unit.test_wiring import KEY, FakeKube, runtime_of


def _events(url: str, home: str) -> list[str]:
    async def scenario() -> list[str]:
        kube = FakeKube()
        runtime = runtime_of(kube, Config(poll_seconds=1, home_namespace=home))
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        raw["spec"]["broker"] = {"url": url}
        for _ in range(2):   # the second reconcile sees the same broker
            await handlers.reconcile(kopf.Body(cast(kopf.RawBody, raw)), runtime, {}, {})
        return list(kube.events)

    return asyncio.run(scenario())


def test_a_short_tls_host_outside_the_operators_namespace_is_announced_once() -> None:
    assert _events("rediss://redis:6380/0", "metamapper-system").count("BrokerNameShort") == 1


def test_nothing_is_announced_beside_the_operator_or_with_a_full_name() -> None:
    assert "BrokerNameShort" not in _events("rediss://redis:6380/0", KEY.namespace)
    assert "BrokerNameShort" not in _events(
        f"rediss://redis.{KEY.namespace}.svc:6380/0", "metamapper-system")
    assert "BrokerNameShort" not in _events("redis://redis:6379/0", "metamapper-system")
