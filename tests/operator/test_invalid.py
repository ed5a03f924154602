"""Bad input: refused by the apiserver naming the field, or reported as InvalidSpec.

Meanwhile a valid object in the same namespace keeps reconciling and the operator keeps
running.
"""

from __future__ import annotations

import copy
import json
import string
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devenv.waiting import wait_until
from tests.conftest import Cluster
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply, broker_secret, condition, fleet, get, wait_for_children
from tests.unit.sample import put

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        put(spec, path, value)
    return mutate


def _drop(path: str) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = spec
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[last]
    return mutate


def _both(*mutations: Mutation) -> Mutation:
    def mutate(spec: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(spec)
    return mutate


FLOWER = {"enabled": True, "basicAuthSecretRef": {"name": "flower-auth"}}
NO_DAY = {"name": "w", "cron": "0 0 30 2 *", "durationSeconds": 60, "minReplicas": 2}

# (mutation of a valid spec, text the apiserver's refusal must contain)
REFUSED: list[tuple[str, Mutation, list[str]]] = [
    ("no image", _drop("image"), ["spec.image", "Required value"]),
    ("empty image", _set("image", ""), ["spec.image"]),
    ("image with a space", _set("image", "my image:1"), ["spec.image", "should match"]),
    ("uppercase image", _set("image", "Worker:1"), ["spec.image", "should match"]),
    ("invalid quantity", _set("pools.0.resources", {"limits": {"cpu": "lots"}}),
     ["spec.pools[0].resources.limits.cpu", "should match"]),
    ("invalid scheduler quantity",
     _set("scheduler", {"resources": {"requests": {"memory": "1 Gi"}}}),
     ["spec.scheduler.resources.requests.memory", "should match"]),
    ("no broker", _drop("broker"), ["spec.broker", "Required value"]),
    ("no pools", _drop("pools"), ["spec.pools", "Required value"]),
    ("empty pools", _set("pools", []), ["spec.pools"]),
    ("url and secret", _set("broker.url", "redis://r:6379/0"),
     ["set exactly one of broker.url or broker.urlSecretRef"]),
    ("neither url nor secret", _set("broker", {}),
     ["set exactly one of broker.url or broker.urlSecretRef"]),
    ("password in url", _set("broker", {"url": "redis://:pw@r:6379/0"}),
     ["spec.broker.url", "must not contain a password"]),
    ("unknown scheme", _set("broker", {"url": "kafka://k:9092"}),
     ["spec.broker.url", "must start with redis://"]),
    ("bad transport", _set("broker.transport", "kafka"),
     ["spec.broker.transport", "Unsupported value"]),
    ("min above max", _set("pools.0.minReplicas", 9),
     ["spec.pools[0].minReplicas", "less than or equal to maxReplicas"]),
    ("negative min", _set("pools.0.minReplicas", -1), ["spec.pools[0].minReplicas"]),
    ("max zero", _set("pools.0.maxReplicas", 0), ["spec.pools[0].maxReplicas"]),
    ("max too high", _set("pools.0.maxReplicas", 5000), ["spec.pools[0].maxReplicas"]),
    ("zero concurrency", _set("pools.0.concurrency", 0), ["spec.pools[0].concurrency"]),
    ("no queues", _set("pools.0.queues", []), ["spec.pools[0].queues"]),
    ("empty queue name", _set("pools.0.queues", [""]), ["spec.pools[0].queues[0]"]),
    ("queue with comma", _set("pools.0.queues", ["a,b"]), ["spec.pools[0].queues[0]"]),
    ("duplicate queue in pool", _set("pools.0.queues", ["a", "a"]),
     ["spec.pools[0].queues[1]", "Duplicate value"]),
    ("queue in two pools", _set("pools.1.queues", ["default"]),
     ["spec.pools", "a queue may be consumed by one pool only"]),
    ("duplicate pool name", _set("pools.1.name", "default"),
     ["spec.pools[1]", "Duplicate value"]),
    ("uppercase pool name", _set("pools.0.name", "Default"), ["spec.pools[0].name"]),
    ("reserved pool name", _set("pools.0.name", "scheduler"),
     ["spec.pools[0].name", "reserved"]),
    ("long pool name", _set("pools.0.name", "p" * 21), ["spec.pools[0].name"]),
    ("pool without name", _drop("pools.0.name"), ["spec.pools[0].name", "Required value"]),
    ("zero grace", _set("pools.0.terminationGracePeriodSeconds", 0),
     ["spec.pools[0].terminationGracePeriodSeconds"]),
    ("tolerance above 1", _set("pools.0.autoscaling", {"tolerance": 2}),
     ["spec.pools[0].autoscaling.tolerance"]),
    ("zero target", _set("pools.0.autoscaling", {"targetBacklogPerReplica": 0}),
     ["spec.pools[0].autoscaling.targetBacklogPerReplica"]),
    ("negative fallback", _set("pools.0.autoscaling", {"fallbackReplicas": -2}),
     ["fallbackReplicas must not be negative"]),
    ("bad pull policy", _set("imagePullPolicy", "Sometimes"),
     ["spec.imagePullPolicy", "Unsupported value"]),
    ("heartbeat not below lock time",
     _set("scheduler", {"lock": {"lockTimeSeconds": 3, "heartbeatIntervalSeconds": 3}}),
     ["spec.scheduler.lock.heartbeatIntervalSeconds", "less than lockTimeSeconds"]),
    ("too many schedulers", _set("scheduler", {"replicas": 9}), ["spec.scheduler.replicas"]),
    ("lock url with password", _set("scheduler", {"lock": {"redisURL": "redis://:p@r/0"}}),
     ["spec.scheduler.lock.redisURL", "must not contain a password"]),
    ("management url with credentials",
     _set("broker.rabbitmq", {"managementURL": "http://u:p@rabbit:15672"}),
     ["spec.broker.rabbitmq.managementURL"]),
    ("env without name", _set("env", [{"value": "x"}]), ["spec.env[0].name"]),
    ("concurrency as text", _set("pools.0.concurrency", "four"),
     ["spec.pools[0].concurrency", "must be of type integer"]),
    ("query password in url", _set("broker", {"url": "redis://r:6379/0?Password=pw"}),
     ["spec.broker.url", "must not carry credentials"]),
    ("password in a failover url",
     _set("broker", {"url": "redis://r:6379/0;redis://:pw@b:6379/0"}),
     ["spec.broker.url", "must not carry credentials"]),
    ("sqs key id in url", _set("broker", {"url": "sqs://AKIAKEYID@"}),
     ["spec.broker.url", "must not carry credentials"]),
    ("query password in lock url",
     _set("scheduler", {"lock": {"redisURL": "redis://l:6379/0?password=pw"}}),
     ["spec.scheduler.lock.redisURL", "?password="]),
    ("window longer than 31 days",
     _set("pools.0.autoscaling", {"schedules": [{**NO_DAY, "cron": "0 8 * * *",
                                                 "durationSeconds": 31 * 86400 + 1}]}),
     ["spec.pools[0].autoscaling.schedules[0].durationSeconds"]),
    ("pool named flower with flower on", _both(_set("flower", FLOWER),
                                               _set("pools.1.name", "flower")),
     ["spec.pools", "Flower Deployment"]),
]

# Valid for the apiserver, but only the operator can tell they cannot run.
NEEDS_OPERATOR: list[tuple[str, Mutation, str]] = [
    ("missing secret", _set("broker", {"urlSecretRef": {"name": "nope"}}),
     "spec.broker.urlSecretRef: Secret 'nope' not found"),
    ("missing key", _set("broker", {"urlSecretRef": {"name": "broker", "key": "other"}}),
     "spec.broker.urlSecretRef: Secret 'broker' has no key 'other'"),
    ("transport disagrees with the secret's url", _set("broker.transport", "rabbitmq"),
     "spec.broker.transport: 'rabbitmq' does not match"),
    ("broker port no client can read", _set("broker", {"url": "redis://127.0.0.1:x/0"}),
     "spec.broker: the port of 'redis://127.0.0.1:x/0' is not a number"),
    ("credentials in celery settings",
     _set("celery", {"settings": {"broker_url": "redis://x"}}),
     "spec.celery.settings.broker_url: carries credentials"),
    ("reserved env", _set("env", [{"name": "METAMAPPER_BROKER_URL", "value": "x"}]),
     "spec.env[0].name: METAMAPPER_BROKER_URL is set by the operator"),
    ("reserved env in a pool",
     _set("pools.0.env", [{"name": "METAMAPPER_BROKER_URL", "value": "x"}]),
     "spec.pools[0].env[0].name: METAMAPPER_BROKER_URL is set by the operator"),
    ("missing management credentials secret",
     _set("broker.rabbitmq", {"credentialsSecretRef": {"name": "nope"}}),
     "spec.broker.rabbitmq.credentialsSecretRef: Secret 'nope' not found"),
    ("a schedule naming no day that exists",
     _set("pools.0.autoscaling", {"schedules": [NO_DAY]}),
     "spec.pools[0].autoscaling.schedules[0].cron: '0 0 30 2 *' (schedule 'w') names no "
     "time that exists"),
    ("a credential named in celery settings",
     _set("celery", {"settings": {"REDIS_PASSWORD": "pw"}}),
     "spec.celery.settings.REDIS_PASSWORD: carries credentials"),
    ("a credential URL deep in celery settings",
     _set("celery", {"settings": {"mongodb_backend_settings": {"host": "mongodb://u:pw@db/x"}}}),
     "spec.celery.settings.mongodb_backend_settings.host: carries credentials"),
]


@pytest.mark.parametrize("name", ["dotted.name", "1digit"])
def test_a_name_flower_cannot_use_is_refused_only_with_flower_on(
        cluster: Cluster, namespace: str, name: str) -> None:
    """A dot or a leading digit makes an invalid Service name: refused with Flower on."""
    def dry_run(body: dict[str, Any]) -> Any:
        return cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                               input=yaml.safe_dump(body), check=False)

    refused = dry_run(fleet(name, flower=FLOWER))
    assert refused.returncode != 0, f"{name} with Flower accepted"
    assert "metadata.name" in refused.stderr and "DNS-1035" in refused.stderr
    assert dry_run(fleet(name)).returncode == 0


def _variant(name: str, mutate: Mutation) -> dict[str, Any]:
    body = fleet(name)
    mutate(body["spec"])
    return body


@pytest.fixture
def valid_fleet(cluster: Cluster, namespace: str, operator: OperatorProcess) -> str:
    apply(cluster, namespace, broker_secret(), fleet("good"))
    wait_for_children(cluster, namespace, {"good-default", "good-revisioner", "good-scheduler"})
    return namespace


def _still_reconciling(cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    changed = fleet("good")
    changed["spec"]["pools"][0]["concurrency"] = 7

    apply(cluster, namespace, changed)

    def follows() -> bool:
        dep = get(cluster, namespace, "deployment", "good-default")
        return bool(dep) and "7" in dep["spec"]["template"]["spec"]["containers"][0]["args"]

    wait_until(follows, what="the valid object to keep reconciling")
    assert operator.alive()


def test_schema_refuses_each_invalid_object_naming_the_field(
        cluster: Cluster, valid_fleet: str, operator: OperatorProcess) -> None:
    assert len(REFUSED) + len(NEEDS_OPERATOR) >= 30
    for i, (what, mutate, expected) in enumerate(REFUSED):
        body = _variant(f"bad-{i}", mutate)
        result = cluster.kubectl("apply", "-n", valid_fleet, "-f", "-",
                                 input=yaml.safe_dump(body), check=False)
        assert result.returncode != 0, f"{what}: accepted"
        for text in expected:
            assert text in result.stderr, f"{what}: {text!r} not in {result.stderr}"
    _still_reconciling(cluster, valid_fleet, operator)


def test_operator_reports_what_the_schema_cannot_catch(
        cluster: Cluster, valid_fleet: str, operator: OperatorProcess) -> None:
    names = [f"inv-{i}" for i in range(len(NEEDS_OPERATOR))]
    apply(cluster, valid_fleet, *[_variant(name, mutate)
                                  for name, (_, mutate, _) in zip(names, NEEDS_OPERATOR,
                                                                  strict=True)])
    for name, (what, _, message) in zip(names, NEEDS_OPERATOR, strict=True):
        def reported(name: str = name) -> dict[str, Any]:
            return condition(get(cluster, valid_fleet, "metamapper", name), "InvalidSpec")

        cond = wait_until(lambda: reported().get("status") == "True" and reported(),
                          what=f"InvalidSpec on {what}")
        assert message in cond["message"], f"{what}: {cond['message']}"
        ready = condition(get(cluster, valid_fleet, "metamapper", name), "Ready")
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert get(cluster, valid_fleet, "deployment", f"{name}-default") is None
    events = json.loads(cluster.kubectl("get", "events", "-n", valid_fleet, "--field-selector",
                                        "reason=InvalidSpec", "-o", "json").stdout)["items"]
    warnings = {e["involvedObject"]["name"]: e["message"] for e in events}
    assert "Secret 'nope' not found" in warnings["inv-0"]
    assert all(e["type"] == "Warning" for e in events)
    _still_reconciling(cluster, valid_fleet, operator)


def test_fixing_an_invalid_object_recovers_it(
        cluster: Cluster, valid_fleet: str, operator: OperatorProcess) -> None:
    apply(cluster, valid_fleet, _variant("late", NEEDS_OPERATOR[0][1]))
    wait_until(lambda: condition(get(cluster, valid_fleet, "metamapper", "late"),
                                 "InvalidSpec").get("status") == "True", what="InvalidSpec")
    apply(cluster, valid_fleet, broker_secret(name="nope"))
    # The Secret now exists; the next resync (or a spec change) picks it up.
    wait_for_children(cluster, valid_fleet, {"good-default", "good-revisioner",
                                             "good-scheduler", "late-default",
                                             "late-revisioner", "late-scheduler"}, timeout=60)
    wait_until(lambda: condition(get(cluster, valid_fleet, "metamapper", "late"),
                                 "InvalidSpec").get("status") == "False", what="recovery")


# --- generated -----------------------------------------------------------------------

FIELDS = {
    # path: (a strategy of values the schema must refuse, the field named in the message)
    "pools.0.concurrency": (st.one_of(st.integers(max_value=0), st.integers(min_value=1025),
                                      st.text(max_size=5)), "spec.pools[0].concurrency"),
    "pools.0.maxReplicas": (st.one_of(st.integers(max_value=0), st.integers(min_value=1001)),
                            "spec.pools[0].maxReplicas"),
    "pools.0.name": (st.text(alphabet=string.ascii_uppercase + "_. ", min_size=1, max_size=8),
                     "spec.pools[0].name"),
    "pools.0.terminationGracePeriodSeconds": (st.integers(max_value=0),
                                              "spec.pools[0].terminationGracePeriodSeconds"),
    "imagePullPolicy": (st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8),
                        "spec.imagePullPolicy"),
    "suspend": (st.one_of(st.integers(), st.text(min_size=1, max_size=4)), "spec.suspend"),
}


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_generated_invalid_objects_are_refused_naming_the_field(
        cluster: Cluster, valid_fleet: str, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(FIELDS)))
    strategy, named = FIELDS[path]
    value = data.draw(strategy)
    body = copy.deepcopy(fleet("generated"))
    _set(path, value)(body["spec"])
    result = cluster.kubectl("apply", "--dry-run=server", "-n", valid_fleet, "-f", "-",
                             input=yaml.safe_dump(body), check=False)
    assert result.returncode != 0, f"{path}={value!r} accepted"
    assert named in result.stderr, f"{path}={value!r}: {result.stderr}"


def test_an_object_the_apiserver_refuses_is_reported_with_its_message(
        cluster: Cluster, valid_fleet: str, operator: OperatorProcess) -> None:
    """The CRD accepts any node selector; only applying the Deployment can tell."""
    bad = fleet("selector")
    bad["spec"]["nodeSelector"] = {"not a label!": "x"}
    apply(cluster, valid_fleet, bad)

    def degraded() -> dict[str, Any]:
        cond = condition(get(cluster, valid_fleet, "metamapper", "selector"), "Degraded")
        return cond if cond.get("reason") == "ApplyFailed" else {}

    message = wait_until(degraded, what="Degraded=ApplyFailed")["message"]
    assert "not a label!" in message and "nodeSelector" in message
    _still_reconciling(cluster, valid_fleet, operator)


def test_a_non_redis_broker_without_a_lock_holds_back_only_the_scheduler(
        cluster: Cluster, valid_fleet: str, operator: OperatorProcess) -> None:
    apply(cluster, valid_fleet, _variant("nolock", _set(
        "broker", {"url": "amqp://rabbit.invalid:5672/mm"})))
    wait_for_children(cluster, valid_fleet, {"good-default", "good-revisioner",
                                             "good-scheduler", "nolock-default",
                                             "nolock-revisioner"})

    def held() -> dict[str, Any]:
        obj = get(cluster, valid_fleet, "metamapper", "nolock") or {}
        state = (obj.get("status") or {}).get("scheduler", {}).get("state")
        return obj if state == "Held" else {}

    obj = wait_until(held, what="the scheduler held back")
    assert condition(obj, "InvalidSpec")["status"] == "False"
    assert "single-beat lock needs Redis" in condition(obj, "Degraded")["message"]
    assert get(cluster, valid_fleet, "deployment", "nolock-scheduler") is None
    events = json.loads(cluster.kubectl("get", "events", "-n", valid_fleet, "--field-selector",
                                        "reason=SchedulerHeld", "-o", "json").stdout)["items"]
    assert [e["type"] for e in events] == ["Warning"]


def test_a_missing_flower_secret_holds_back_only_flower(
        cluster: Cluster, valid_fleet: str, operator: OperatorProcess) -> None:
    apply(cluster, valid_fleet, _variant("noauth", _set("flower", FLOWER)))
    wait_for_children(cluster, valid_fleet, {"good-default", "good-revisioner",
                                             "good-scheduler", "noauth-default",
                                             "noauth-revisioner", "noauth-scheduler"})

    def held() -> dict[str, Any]:
        obj = get(cluster, valid_fleet, "metamapper", "noauth") or {}
        return obj if "Flower is not deployed" in condition(obj, "Degraded").get(
            "message", "") else {}

    obj = wait_until(held, what="Flower held back")
    assert condition(obj, "InvalidSpec")["status"] == "False"
    # Ready is False; its reason may be the unreachable broker of these fleets, which
    # comes first: Degraded names every problem.
    assert condition(obj, "Ready")["status"] == "False"
    assert "Secret 'flower-auth' not found" in condition(obj, "Degraded")["message"]
    assert get(cluster, valid_fleet, "deployment", "noauth-flower") is None
    events = json.loads(cluster.kubectl("get", "events", "-n", valid_fleet, "--field-selector",
                                        "reason=SecretMissing", "-o", "json").stdout)["items"]
    assert [e["type"] for e in events] == ["Warning"]
    apply(cluster, valid_fleet, {"apiVersion": "v1", "kind": "Secret",
                                 "metadata": {"name": "flower-auth"},
                                 "stringData": {"auth": "admin:s3cret"}})
    # The operator does not watch Secrets: the resync looks for it again.
    wait_for_children(cluster, valid_fleet, {"good-default", "good-revisioner",
                                             "good-scheduler", "noauth-default",
                                             "noauth-revisioner", "noauth-scheduler",
                                             "noauth-flower"}, timeout=60)
