"""The manifest builders: the children of a Metamapper, their hashes and their sizes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from metamapper_operator.builders import (
    CONFIG_HASH,
    SPEC_HASH,
    Held,
    Part,
    desired_objects,
    initial_replicas,
    scheduler_env,
    scheduler_held,
)
from metamapper_operator.model import parse
from metamapper_operator.status import Observed, render
from tests.unit.sample import BODY, body, settled


def objects(raw: dict[str, Any], current: dict[str, int] | None = None) -> dict[str, dict]:
    fleet = parse(raw)
    # Pool Deployments and their PodDisruptionBudgets share names: the budgets are
    # tested in test_eviction.py.
    return {o["metadata"]["name"]: o for o in desired_objects(fleet, "redis", current or {})
            if o["kind"] != "PodDisruptionBudget"}


def test_children_and_their_hashes() -> None:
    built = objects(BODY)
    assert set(built) == {"mm-celery", "mm-default", "mm-scheduler"}
    settings = json.loads(built["mm-celery"]["data"]["settings.json"])
    assert settings == {"task_soft_time_limit": 60,
                        "broker_transport_options": {"global_keyprefix": "mm:"},
                        "beat_scheduler": "metamapper.beat:RedisScheduler",
                        "redbeat_key_prefix": "metamapper:ns:mm:beat:"}
    # The size is not part of a Deployment's content hash: scaling never re-applies.
    again = objects(BODY, {"mm-default": 4})
    assert again["mm-default"]["spec"]["replicas"] == 4
    assert (again["mm-default"]["metadata"]["annotations"][SPEC_HASH]
            == built["mm-default"]["metadata"]["annotations"][SPEC_HASH])


def test_configuration_change_changes_the_pod_template_checksum() -> None:
    before = objects(BODY)["mm-default"]["spec"]["template"]["metadata"]["annotations"]
    after = objects(body(celery={"settings": {"task_soft_time_limit": 61}}))[
        "mm-default"]["spec"]["template"]["metadata"]["annotations"]
    assert before[CONFIG_HASH] != after[CONFIG_HASH]


def test_literal_url_is_a_value_and_secret_url_a_secret_ref() -> None:
    env = {e["name"]: e for e in
           objects(BODY)["mm-default"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["METAMAPPER_BROKER_URL"] == {"name": "METAMAPPER_BROKER_URL",
                                            "value": "redis://redis:6379/0"}
    secret = objects(body(broker={"urlSecretRef": {"name": "b", "key": "u"}}))
    [container] = secret["mm-scheduler"]["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert refs["METAMAPPER_BROKER_URL"] == {"secretKeyRef": {"name": "b", "key": "u"}}
    assert refs["SINGLE_BEAT_REDIS_SERVER"] == {"secretKeyRef": {"name": "b", "key": "u"}}


def test_a_non_redis_broker_without_a_lock_redis_holds_back_only_the_scheduler() -> None:
    fleet = parse(body(broker={"url": "amqp://rabbit:5672/mm"}))
    assert "lock.redisURL" in (scheduler_held(fleet, "rabbitmq") or "")
    assert {o["metadata"]["name"] for o in desired_objects(fleet, "rabbitmq", {})} == {
        "mm-celery", "mm-default"}
    status = render(Observed(generation=3, now="t", fleet=fleet, transport="rabbitmq",
                             deployments={"mm-default": settled("mm-default")}), {})
    conditions = {c["type"]: c for c in status["conditions"]}
    assert status["scheduler"]["state"] == "Held"
    assert conditions["InvalidSpec"]["status"] == "False"
    assert conditions["Ready"]["reason"] == conditions["Degraded"]["reason"] == "SchedulerHeld"
    assert conditions["Progressing"]["reason"] == "Settled"
    locked = parse(body(broker={"url": "amqp://rabbit:5672/mm"},
                        scheduler={"lock": {"redisURL": "redis://lock:6379/1"}}))
    assert scheduler_held(locked, "rabbitmq") is None
    assert scheduler_env(locked, "rabbitmq")[0] == {"name": "SINGLE_BEAT_REDIS_SERVER",
                                                    "value": "redis://lock:6379/1"}


def test_user_security_contexts_replace_the_restricted_defaults() -> None:
    pod = objects(body(podSecurityContext={"runAsUser": 5000}))["mm-default"]["spec"][
        "template"]["spec"]
    assert pod["securityContext"] == {"runAsUser": 5000}
    default = objects(BODY)["mm-default"]["spec"]["template"]["spec"]
    assert default["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(("current", "suspend", "expected"), [
    (None, False, 1), (3, False, 3), (9, False, 5), (0, False, 1), (3, True, 0)])
def test_initial_replicas_keep_the_autoscalers_size_within_bounds(
        current: int | None, suspend: bool, expected: int) -> None:
    fleet = parse(body(suspend=suspend))
    assert initial_replicas(fleet, fleet.pools[0], current) == expected


def worker_args(pool: dict[str, Any]) -> list[str]:
    built = objects(body(pools=[{"name": "default", "queues": ["default"], **pool}]))
    [container] = built["mm-default"]["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_workers_start_without_mingle_and_gossip_unless_a_pool_asks() -> None:
    assert worker_args({})[-2:] == ["--without-mingle", "--without-gossip"]
    mingling = worker_args({"mingle": True, "extraArgs": ["--prefetch-multiplier", "1"]})
    assert "--without-mingle" not in mingling
    assert mingling[-3:] == ["--without-gossip", "--prefetch-multiplier", "1"]
    assert "--without-gossip" not in worker_args({"gossip": True})


def test_a_held_part_is_left_out_and_the_pools_stay() -> None:
    fleet = parse(body(celery={"resultBackendSecretRef": {"name": "results"}},
                       flower={"enabled": True, "basicAuthSecretRef": {"name": "auth"}}))

    def built(*parts: Part) -> dict[str, dict[str, Any]]:
        held = tuple(Held(part, f"{part} held") for part in parts)
        return {f'{o["kind"]}/{o["metadata"]["name"]}': o
                for o in desired_objects(fleet, "redis", {}, held)
                if o["kind"] != "PodDisruptionBudget"}

    def env(obj: dict[str, Any]) -> set[str]:
        return {v["name"] for v in obj["spec"]["template"]["spec"]["containers"][0]["env"]}

    deployments = {f"Deployment/mm-{name}" for name in ("default", "scheduler", "flower")}
    assert set(built()) == {"ConfigMap/mm-celery", "Service/mm-flower", *deployments}
    assert "METAMAPPER_CELERY_RESULT_BACKEND" in env(built()["Deployment/mm-default"])
    assert set(built(Part.FLOWER, Part.SCHEDULER)) == {"ConfigMap/mm-celery",
                                                       "Deployment/mm-default"}
    without = built(Part.RESULT_BACKEND)
    assert set(without) == set(built())
    assert all("METAMAPPER_CELERY_RESULT_BACKEND" not in env(without[name])
               for name in deployments)
