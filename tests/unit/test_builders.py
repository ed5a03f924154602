"""The pure parts of the operator: spec model, manifest builders, status, redaction."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from metamapper_operator.builders import (
    CONFIG_HASH,
    SPEC_HASH,
    desired_objects,
    initial_replicas,
    scheduler_env,
    scheduler_held,
)
from metamapper_operator.model import SpecError, parse
from metamapper_operator.status import DeploymentState, Observed, changes, render
from metamapper_operator.urls import redact

BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "mm", "uid": "u-1", "generation": 3},
    "spec": {
        "image": "worker:1",
        "broker": {"url": "redis://redis:6379/0", "redis": {"globalKeyPrefix": "mm:"}},
        "celery": {"settings": {"task_soft_time_limit": 60}},
        "pools": [{"name": "default", "queues": ["default", "checks"], "concurrency": 2,
                   "minReplicas": 1, "maxReplicas": 5}],
    },
}


def body(**spec: Any) -> dict[str, Any]:
    changed = copy.deepcopy(BODY)
    changed["spec"].update(spec)
    return changed


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
                        "broker_transport_options": {"global_keyprefix": "mm:"}}
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
    deps = {"mm-default": DeploymentState("mm-default", "h", 1, ready=1, updated=1,
                                          generation=1, observed_generation=1)}
    status = render(Observed(3, "t", fleet, "rabbitmq", deployments=deps), {})
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


@pytest.mark.parametrize(("spec", "field"), [
    ({"pools": [{"name": "a", "queues": ["q"]}, {"name": "b", "queues": ["q"]}]},
     "spec.pools[1].queues"),
    ({"env": [{"name": "METAMAPPER_BROKER_URL", "value": "x"}]}, "spec.env[0].name"),
    ({"celery": {"settings": {"result_backend": "redis://x"}}},
     "spec.celery.settings.result_backend"),
    ({"broker": {"url": "kafka://k"}}, "spec.broker"),
    ({"broker": {"url": "redis://r", "transport": "sqs"}}, "spec.broker.transport"),
    ({"broker": {}}, "spec.broker"),
])
def test_spec_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(**spec))
    assert raised.value.field == field


def test_status_keeps_transition_times_and_patches_only_changes() -> None:
    fleet = parse(BODY)
    deps = {"mm-default": DeploymentState("mm-default", "h", 1, ready=1, updated=1,
                                          generation=1, observed_generation=1),
            "mm-scheduler": DeploymentState("mm-scheduler", "h", 2, ready=2, updated=2,
                                            generation=1, observed_generation=1)}
    first = render(Observed(3, "t1", fleet, "redis", deployments=deps), {})
    assert first["workers"] == "1/1" and first["scheduler"]["state"] == "Running"
    ready = next(c for c in first["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastTransitionTime"] == "t1"
    second = render(Observed(3, "t2", fleet, "redis", deployments=deps), first)
    assert second == first and changes(first, second) == {}
    invalid = render(Observed(4, "t3", invalid="spec.x: bad"), first)
    patch = changes({**first, "kopf": {"x": 1}}, invalid)
    assert patch["pools"] is None and "kopf" not in patch
    assert next(c for c in invalid["conditions"] if c["type"] == "InvalidSpec")[
        "lastTransitionTime"] == "t3"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@r:6379/0", "redis://:***@r:6379/0"),
    ("amqp://user:p%40ss@rabbit:5672/vh", "amqp://user:***@rabbit:5672/vh"),
    ("redis://r:6379/0", "redis://r:6379/0"),
])
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_default_grace_outlasts_the_workers_task_time_limit_and_a_short_one_is_reported(
        ) -> None:
    conditions = {c["type"]: c for c in render(Observed(3, "t", parse(BODY), "redis"), {})[
        "conditions"]}
    assert conditions["GracePeriodTooShort"]["status"] == "False"
    pools = [{"name": "default", "queues": ["default"], "terminationGracePeriodSeconds": 300},
             {"name": "long", "queues": ["long"], "terminationGracePeriodSeconds": 3000}]
    short = parse(body(pools=pools, celery={"settings": {"task_time_limit": 2400}}))
    conditions = {c["type"]: c for c in render(Observed(3, "t", short, "redis"), {})[
        "conditions"]}
    grace = conditions["GracePeriodTooShort"]
    assert grace["status"] == "True" and "default (300 s)" in grace["message"]
    assert "2400" in grace["message"] and "long" not in grace["message"]
