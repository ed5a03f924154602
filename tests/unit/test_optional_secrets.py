"""A missing optional Secret holds back only the part that needs it: the fleet's pools are
created and keep scaling, and the part held back is announced once."""

from __future__ import annotations

import asyncio
import copy

import kopf

from metamapper_operator import handlers
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.config import Config
from metamapper_operator.model import parse
from metamapper_operator.status import DeploymentState
from tests.unit.sample import BODY
from tests.unit.test_wiring import KEY, FakeKube, FakeProbe, runtime_of


def test_missing_flower_and_result_backend_secrets_leave_the_pools_scaling() -> None:
    async def scenario() -> None:
        kube = FakeKube()   # it has no Secret at all
        runtime = runtime_of(kube, Config(poll_seconds=1))
        raw = copy.deepcopy(BODY)
        raw["metadata"].update(namespace=KEY.namespace, name=KEY.name, uid="u-1")
        raw["spec"].update(celery={"resultBackendSecretRef": {"name": "results"}},
                           flower={"enabled": True, "basicAuthSecretRef": {"name": "auth"}})

        await handlers.reconcile(kopf.Body(raw), runtime, {}, {})
        state = runtime.fleets[KEY]
        assert state.invalid is None and state.access is not None
        assert set(kube.applied) == {"mm-celery", "mm-default", "mm-scheduler"}
        assert kube.events.count("SecretMissing") == 2
        assert "InvalidSpec" not in kube.events

        await handlers.reconcile(kopf.Body(raw), runtime, {}, {})
        assert kube.events.count("SecretMissing") == 2   # announced once

        autoscaler = Autoscaler(runtime, lambda key: {"mm-default": DeploymentState(
            name="mm-default", spec_hash="h", replicas=1)})
        autoscaler.probes[state.access] = FakeProbe(waiting=9)
        await autoscaler.cycle()
        assert [name for name, _ in kube.scaled] == ["mm-default"]

    asyncio.run(scenario())


def test_optional_secrets_are_read_again_like_the_brokers() -> None:
    """The operator does not watch Secrets: an object naming any is reconciled again once
    its Secrets are due to be read, so a deleted (or created) optional Secret is seen."""
    flower_only = copy.deepcopy(BODY)
    flower_only["spec"]["flower"] = {"enabled": True, "basicAuthSecretRef": {"name": "auth"}}
    results_only = copy.deepcopy(BODY)
    results_only["spec"]["celery"] = {"resultBackendSecretRef": {"name": "results"}}
    assert handlers.reads_secrets(parse(flower_only))
    assert handlers.reads_secrets(parse(results_only))
    assert not handlers.reads_secrets(parse(BODY))
