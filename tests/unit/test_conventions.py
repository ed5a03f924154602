"""Metamapper's conventions, probes, the scheduler's modes and Flower in the pure builders."""

from __future__ import annotations

from typing import Any

import pytest

from metamapper_operator.builders import ONE_BEAT_GATE, desired_objects, scheduler_held
from metamapper_operator.model import SpecError, parse
from tests.unit.sample import body
from tests.unit.test_builders import objects


def container(built: dict[str, dict], name: str) -> dict[str, Any]:
    [found] = built[name]["spec"]["template"]["spec"]["containers"]
    return found


def env(found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in found["env"]}


def test_metamapper_names_carry_the_broker_and_a_result_backend_from_a_secret() -> None:
    built = objects(body(broker={"urlSecretRef": {"name": "b", "key": "u"}},
                         celery={"resultBackendSecretRef": {"name": "rb"}}))
    for name in ("mm-default", "mm-scheduler"):
        variables = env(container(built, name))
        ref = {"secretKeyRef": {"name": "b", "key": "u"}}
        assert variables["METAMAPPER_CELERY_BROKER_URL"]["valueFrom"] == ref
        assert variables["METAMAPPER_BROKER_URL"]["valueFrom"] == ref    # the alias
        assert variables["METAMAPPER_CELERY_RESULT_BACKEND"]["valueFrom"] == {
            "secretKeyRef": {"name": "rb", "key": "url"}}
    assert "rb" not in str(built["mm-celery"]["data"])


@pytest.mark.parametrize("name", ["METAMAPPER_CELERY_BROKER_URL",
                                  "METAMAPPER_CELERY_RESULT_BACKEND"])
def test_the_operators_variables_cannot_be_overridden(name: str) -> None:
    with pytest.raises(SpecError, match=rf"spec.env\[0\].name: {name} is set by the operator"):
        parse(body(env=[{"name": name, "value": "redis://x/0"}]))


def test_celery_command_style_is_the_default() -> None:
    built = objects(body())
    worker = container(built, "mm-default")
    assert worker["command"] == ["celery"]
    assert worker["args"][:5] == ["--app", "metamapper", "worker", "--loglevel", "INFO"]
    scheduler = container(built, "mm-scheduler")
    assert scheduler["command"] == ["single-beat"]
    assert scheduler["args"][:4] == ["celery", "--app", "metamapper", "beat"]


def test_entrypoint_command_style_runs_the_images_entrypoint() -> None:
    built = objects(body(commandStyle="Entrypoint",
                         scheduler={"mode": "Standalone", "scheduleStore": "File"}))
    worker = container(built, "mm-default")
    assert "command" not in worker
    assert worker["args"] == ["worker", "--queues", "default,checks", "--concurrency", "2",
                              "--hostname", "default@$(POD_NAME)", "--without-mingle",
                              "--without-gossip"]
    scheduler = container(built, "mm-scheduler")
    assert "command" not in scheduler
    assert scheduler["args"] == ["scheduler", "--schedule", "/tmp/celerybeat-schedule"]
    # single-beat under the entrypoint: through its pass-through of unknown commands.
    single = container(objects(body(commandStyle="Entrypoint")), "mm-scheduler")
    assert "command" not in single and single["args"][:2] == ["single-beat", "celery"]


def test_standalone_scheduler_is_one_gated_pod_recreated_and_needs_no_lock() -> None:
    raw = body(broker={"url": "amqp://rabbit:5672/mm"},
               scheduler={"mode": "Standalone", "scheduleStore": "File"})
    fleet = parse(raw)
    assert scheduler_held(fleet, "rabbitmq") is None
    [scheduler] = [o for o in desired_objects(fleet, "rabbitmq", {})
                   if o["metadata"]["name"] == "mm-scheduler"]
    assert scheduler["spec"]["replicas"] == 1
    assert scheduler["spec"]["strategy"] == {"type": "Recreate"}
    pod = scheduler["spec"]["template"]["spec"]
    assert pod["schedulingGates"] == [{"name": ONE_BEAT_GATE}]
    [beat] = pod["containers"]
    assert beat["command"] == ["celery"]
    assert not any(e["name"].startswith("SINGLE_BEAT") for e in beat["env"])
    # The Redis schedule store still needs a Redis.
    held = parse(body(broker={"url": "amqp://rabbit:5672/mm"}, scheduler={"mode": "Standalone"}))
    assert "lock.redisURL" in (scheduler_held(held, "rabbitmq") or "")


def test_standalone_refuses_more_than_one_replica() -> None:
    with pytest.raises(SpecError, match=r"spec\.scheduler\.replicas: must be 0 or 1"):
        parse(body(scheduler={"mode": "Standalone", "replicas": 2}))


def test_redis_schedule_store_gets_the_lock_redis_as_env_never_in_the_config_map() -> None:
    built = objects(body(scheduler={"lock": {"redisURLSecretRef": {"name": "lock"}}}))
    variables = env(container(built, "mm-scheduler"))
    assert variables["METAMAPPER_BEAT_REDIS_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "lock", "key": "url"}}
    assert "METAMAPPER_BEAT_REDIS_URL" not in env(container(built, "mm-default"))
    file_store = objects(body(scheduler={"scheduleStore": "File"}))
    assert "METAMAPPER_BEAT_REDIS_URL" not in env(container(file_store, "mm-scheduler"))
    assert "beat_scheduler" not in file_store["mm-celery"]["data"]["settings.json"]


def test_probes_default_configurable_and_off() -> None:
    built = objects(body())
    worker, scheduler = container(built, "mm-default"), container(built, "mm-scheduler")
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez?max-age=60", "port": "probes"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    assert {"name": "probes", "containerPort": 9807, "protocol": "TCP"} in worker["ports"]
    assert {"name": "METAMAPPER_PROBE_PORT", "value": "9807"} in worker["env"]
    assert scheduler["livenessProbe"]["exec"]["command"][:2] == ["metamapper-probe", "beat-live"]
    assert "readinessProbe" not in scheduler
    own = {"tcpSocket": {"port": 9}, "periodSeconds": 7}
    custom = objects(body(probes={"enabled": False, "workerReadiness": own}))
    worker = container(custom, "mm-default")
    assert worker["readinessProbe"] == own and "livenessProbe" not in worker
    assert "livenessProbe" not in container(custom, "mm-scheduler")


def test_flower_is_off_by_default_and_needs_basic_auth() -> None:
    assert "mm-flower" not in objects(body())
    with pytest.raises(SpecError, match=r"spec\.flower\.basicAuthSecretRef: is required"):
        parse(body(flower={"enabled": True}))


def test_flower_deployment_and_service() -> None:
    fleet = parse(body(broker={"urlSecretRef": {"name": "b"}},
                       flower={"enabled": True, "basicAuthSecretRef": {"name": "fa"}}))
    children = desired_objects(fleet, "redis", {})
    built = {o["metadata"]["name"]: o for o in children if o["kind"] == "Deployment"}
    flower = container(built, "mm-flower")
    assert flower["command"] == ["celery"]
    assert flower["args"] == ["--app", "metamapper", "flower", "--port=5555"]
    variables = env(flower)
    assert variables["FLOWER_BASIC_AUTH"]["valueFrom"] == {
        "secretKeyRef": {"name": "fa", "key": "auth"}}
    assert variables["METAMAPPER_CELERY_BROKER_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "b", "key": "url"}}
    assert "redis://" not in " ".join(flower["args"])
    assert flower["securityContext"]["readOnlyRootFilesystem"] is True
    pod = built["mm-flower"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    [svc] = [o for o in children if o["kind"] == "Service"]
    assert svc["metadata"]["name"] == "mm-flower"
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "flower"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 5555, "targetPort": "http"}]


def test_flower_gets_default_requests_and_a_memory_limit_its_own_settings_override() -> None:
    def flower_resources(resources: dict[str, Any] | None) -> dict[str, Any]:
        flower: dict[str, Any] = {"enabled": True, "basicAuthSecretRef": {"name": "fa"}}
        if resources is not None:
            flower["resources"] = resources
        built = {o["metadata"]["name"]: o for o in desired_objects(
            parse(body(flower=flower)), "redis", {}) if o["kind"] == "Deployment"}
        return dict(container(built, "mm-flower")["resources"])

    assert flower_resources(None) == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                      "limits": {"memory": "512Mi"}}
    assert flower_resources({"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}}) == {
        "requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
