"""The spec model: a bad object is refused with the field it is wrong in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metamapper_operator.builders import desired_objects
from metamapper_operator.model import SpecError, parse
from metamapper_operator.references import RedisLayout
from metamapper_operator.status import Observed, render
from tests.unit.sample import body, put


@pytest.mark.parametrize(("spec", "field"), [
    ({"pools": [{"name": "a", "queues": ["q"]}, {"name": "b", "queues": ["q"]}]},
     "spec.pools[1].queues"),
    ({"env": [{"name": "METAMAPPER_BROKER_URL", "value": "x"}]}, "spec.env[0].name"),
    ({"celery": {"settings": {"result_backend": "redis://x"}}},
     "spec.celery.settings.result_backend"),
    ({"broker": {"url": "kafka://k"}}, "spec.broker"),
    ({"broker": {"url": "redis://r", "transport": "sqs"}}, "spec.broker.transport"),
    ({"broker": {}}, "spec.broker"),
    ({"broker": {"url": "redis://a:6379/0;amqp://b//"}}, "spec.broker"),
    ({"broker": {"url": "redis://a:6379/0;kafka://b"}}, "spec.broker"),
])
def test_spec_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(**spec))
    assert raised.value.field == field


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://:pw@r:99999/0"])
def test_a_port_no_client_can_use_is_an_invalid_spec(url: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(broker={"url": url}))
    assert "port" in raised.value.message and "pw" not in raised.value.message


# --- what the model accepts, the core can evaluate ---------------------------------------

SCHEDULE = {"name": "w", "cron": "0 8 * * 1-5", "durationSeconds": 3600, "minReplicas": 2}


def _scheduled(**changed: Any) -> dict[str, Any]:
    return body(pools=[{"name": "default", "queues": ["default"],
                        "autoscaling": {"schedules": [{**SCHEDULE, **changed}]}}])


def _annotated(**annotations: str) -> dict[str, Any]:
    raw = body()
    raw["metadata"]["annotations"] = annotations
    return raw


WHERE = "spec.pools[0].autoscaling"
PINNED = "metadata.annotations[autoscaling.metamapper.io/paused-replicas]"
OPTIONS = "spec.celery.settings.broker_transport_options"


@pytest.mark.parametrize(("raw", "field"), [
    # croniter.is_valid says True; no such day exists, so get_next/get_prev raise
    (_scheduled(cron="0 0 30 2 *"), f"{WHERE}.schedules[0].cron"),
    (_scheduled(cron="0 0 31 4,6 *"), f"{WHERE}.schedules[0].cron"),
    (_scheduled(durationSeconds=10**12), f"{WHERE}.schedules[0].durationSeconds"),
    (_scheduled(durationSeconds=0), f"{WHERE}.schedules[0].durationSeconds"),
    (_scheduled(durationSeconds="3600"), f"{WHERE}.schedules[0].durationSeconds"),
    (_scheduled(durationSeconds=True), f"{WHERE}.schedules[0].durationSeconds"),
    (_scheduled(minReplicas=-1), f"{WHERE}.schedules[0].minReplicas"),
    (_scheduled(timeZone=""), f"{WHERE}.schedules[0].timeZone"),
    (_scheduled(timeZone="zone.tab"), f"{WHERE}.schedules[0].timeZone"),
    (_scheduled(timeZone=7), f"{WHERE}.schedules[0].timeZone"),
    (_scheduled(cron=5), f"{WHERE}.schedules[0].cron"),
    (_annotated(**{"autoscaling.metamapper.io/paused-replicas": "²"}), PINNED),
    (_annotated(**{"autoscaling.metamapper.io/paused-replicas": "٣"}), PINNED),
    (_annotated(**{"autoscaling.metamapper.io/paused-replicas": "9" * 30}), PINNED),
    (body(celery={"settings": {"broker_transport_options": "visibility_timeout=1"}}), OPTIONS),
    (body(celery={"settings": {"broker_transport_options": ["a"]}}), OPTIONS),
    (body(celery={"settings": {"broker_transport_options": {"priority_steps": 3}}}),
     f"{OPTIONS}.priority_steps"),
    (body(celery={"settings": {"broker_transport_options": {"priority_steps": ["a"]}}}),
     f"{OPTIONS}.priority_steps"),
    (body(celery={"settings": {"broker_transport_options": {"visibility_timeout": "1h"}}}),
     f"{OPTIONS}.visibility_timeout"),
    (body(celery={"settings": {"broker_transport_options": {"visibility_timeout": 10**400}}}),
     f"{OPTIONS}.visibility_timeout"),
    (body(celery={"settings": {"broker_transport_options": {"sep": 1}}}), f"{OPTIONS}.sep"),
    (body(celery={"settings": {"task_time_limit": 10**400}}),
     "spec.celery.settings.task_time_limit"),
    (body(celery={"settings": {"task_soft_time_limit": "long"}}),
     "spec.celery.settings.task_soft_time_limit"),
    (body(celery={"settings": ["task_time_limit"]}), "spec.celery.settings"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"targetWaitSeconds": 10**400}}]),
     f"{WHERE}.targetWaitSeconds"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"scaleDownStabilizationSeconds": 10**400}}]),
     f"{WHERE}.scaleDownStabilizationSeconds"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"scaleDownPercentile": 0}}]), f"{WHERE}.scaleDownPercentile"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"scaleDownPercentile": 101}}]),
     f"{WHERE}.scaleDownPercentile"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"scaleDownStepPercent": 0}}]),
     f"{WHERE}.scaleDownStepPercent"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"panicWindowSeconds": -1}}]), f"{WHERE}.panicWindowSeconds"),
    (body(pools=[{"name": "default", "queues": ["q"],
                  "autoscaling": {"targetWaitSeconds": -1}}]), f"{WHERE}.targetWaitSeconds"),
    (body(pools=[{"name": "default", "queues": ["q"], "autoscaling": {"tolerance": "x"}}]),
     f"{WHERE}.tolerance"),
    (body(pools=[{"name": "default", "queues": ["q"], "maxReplicas": 10**400}]),
     "spec.pools[0].maxReplicas"),
    (body(pools=[{"name": "default", "queues": ["q"], "concurrency": "4"}]),
     "spec.pools[0].concurrency"),
])
def test_values_the_core_cannot_evaluate_are_refused_at_parse(raw: dict[str, Any],
                                                              field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(raw)
    assert raised.value.field == field


def test_a_schedule_naming_no_day_is_refused_by_name() -> None:
    with pytest.raises(SpecError) as raised:
        parse(_scheduled(cron="0 0 30 2 *"))
    assert "schedule 'w'" in raised.value.message and "names no time" in raised.value.message


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "0 0 31 * *", "0 0 L * *", "0 0 31 2 1"])
def test_schedules_that_name_a_day_that_exists_are_accepted(cron: str) -> None:
    assert parse(_scheduled(cron=cron)).pools[0].autoscaling.schedules[0].cron == cron


def test_a_pinned_pause_is_a_plain_count() -> None:
    pause = parse(_annotated(**{"autoscaling.metamapper.io/paused-replicas": " 3 "})).pause
    assert pause is not None and pause.replicas == 3


# --- credentials never reach a ConfigMap or the spec ------------------------------------

SETTINGS = "spec.celery.settings"


@pytest.mark.parametrize(("settings", "field"), [
    ({"redis_password": "s3cret"}, f"{SETTINGS}.redis_password"),
    ({"REDIS_PASSWORD": "s3cret"}, f"{SETTINGS}.REDIS_PASSWORD"),
    ({"security_key_password": "s3cret"}, f"{SETTINGS}.security_key_password"),
    ({"s3_secret_access_key": "s3cret"}, f"{SETTINGS}.s3_secret_access_key"),
    ({"cosmosdbsql_master_key": "s3cret"}, f"{SETTINGS}.cosmosdbsql_master_key"),
    ({"cassandra_auth_kwargs": {"username": "u", "password": "s3cret"}},
     f"{SETTINGS}.cassandra_auth_kwargs"),
    ({"broker_transport_options": {"sasl_password": "s3cret"}},
     f"{SETTINGS}.broker_transport_options.sasl_password"),
    ({"result_backend_transport_options": {"password": "s3cret"}},
     f"{SETTINGS}.result_backend_transport_options.password"),
    ({"mongodb_backend_settings": {"host": "mongodb://u:s3cret@db/x"}},
     f"{SETTINGS}.mongodb_backend_settings.host"),
    ({"my_backend": "redis://r:6379/0?password=s3cret"}, f"{SETTINGS}.my_backend"),
    ({"beat_urls": ["redis://r:6379/0", "redis://:s3cret@r:6379/1"]},
     f"{SETTINGS}.beat_urls[1]"),
    ({"broker_url": "redis://r:6379/0"}, f"{SETTINGS}.broker_url"),
])
def test_credential_bearing_celery_settings_are_refused_without_their_value(
        settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(celery={"settings": settings}))
    assert raised.value.field == field
    assert "carries credentials" in raised.value.message
    assert "s3cret" not in str(raised.value)


def test_settings_without_credentials_pass() -> None:
    settings = {"redbeat_key_prefix": "x:", "task_routes": {"a.*": {"queue": "a"}},
                "broker_transport_options": {"visibility_timeout": 7200, "sep": ":"},
                "redis_password": None, "result_expires": 3600}
    assert parse(body(celery={"settings": settings})).celery_settings == settings


def test_the_removal_marker_reaches_the_fleet_as_null_and_passes_the_checks() -> None:
    """``$remove`` removes a key as null does; the model spells it null, so a setting the
    operator reads as a number (a time limit) or names a credential is not refused."""
    settings = {"task_soft_time_limit": "$remove", "broker_url": "$remove",
                "broker_transport_options": {"visibility_timeout": "$remove"},
                "beat_schedule": {"beat-scheduler-healthcheck": "$remove"}}
    assert parse(body(celery={"settings": settings})).celery_settings == {
        "task_soft_time_limit": None, "broker_url": None,
        "broker_transport_options": {"visibility_timeout": None},
        "beat_schedule": {"beat-scheduler-healthcheck": None}}


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
def test_removed_transport_options_are_read_as_kombus_own(removed: Any) -> None:
    options = dict.fromkeys(("priority_steps", "sep", "unacked_key", "unacked_index_key",
                             "global_keyprefix", "visibility_timeout"), removed)
    fleet = parse(body(broker={"url": "redis://redis:6379/0"},
                       celery={"settings": {"broker_transport_options": options}}))
    assert RedisLayout.of(fleet) == RedisLayout()


@pytest.mark.parametrize(("spec", "field"), [
    ({"broker": {"url": "redis://r:6379/0?password=s3cret"}}, "spec.broker.url"),
    ({"broker": {"url": "redis://r:6379/0?Password=s3cret"}}, "spec.broker.url"),
    ({"broker": {"url": "redis://:s3cret@r:6379/0"}}, "spec.broker.url"),
    ({"broker": {"url": "redis://r:6379/0;redis://:s3cret@b:6379/0"}}, "spec.broker.url"),
    ({"broker": {"url": "sqs://AKIAKEYID@"}}, "spec.broker.url"),
    ({"scheduler": {"lock": {"redisURL": "redis://l:6379/0?password=s3cret"}}},
     "spec.scheduler.lock.redisURL"),
    ({"broker": {"url": "amqp://rabbit//", "rabbitmq": {
        "managementURL": "http://u:s3cret@rabbit:15672"}}},
     "spec.broker.rabbitmq.managementURL"),
])
def test_urls_in_the_spec_carry_no_credential(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(body(**spec))
    assert raised.value.field == field
    assert "s3cret" not in str(raised.value)


# --- names of the children --------------------------------------------------------------

FLOWER = {"enabled": True, "basicAuthSecretRef": {"name": "auth"}}


def _named(name: str, **spec: Any) -> dict[str, Any]:
    raw = body(**spec)
    raw["metadata"]["name"] = name
    return raw


@pytest.mark.parametrize(("raw", "field"), [
    (body(flower=FLOWER, pools=[{"name": "flower", "queues": ["q"]}]), "spec.pools[0].name"),
    (body(pools=[{"name": "scheduler", "queues": ["q"]}]), "spec.pools[0].name"),
    (_named("mm.prod", flower=FLOWER), "metadata.name"),
    (_named("1mm", flower=FLOWER), "metadata.name"),
    (_named("m" * 57, flower=FLOWER), "metadata.name"),
    (_named("m" * 60), "metadata.name"),
    (_named("m" * 50, pools=[{"name": "p" * 20, "queues": ["q"]}]), "spec.pools[0].name"),
    (body(pools=[{"name": "P_1", "queues": ["q"]}]), "spec.pools[0].name"),
])
def test_names_that_make_invalid_or_colliding_children_are_refused(
        raw: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse(raw)
    assert raised.value.field == field


@pytest.mark.parametrize("raw", [
    body(pools=[{"name": "flower", "queues": ["q"]}]),
    _named("mm.prod"), _named("1mm"), _named("m" * 40, flower=FLOWER),
])
def test_names_that_make_valid_distinct_children_pass(raw: dict[str, Any]) -> None:
    assert parse(raw).name == raw["metadata"]["name"]


# --- whatever a field holds, parse answers with a Fleet or a SpecError -----------------

# Every field the model reads, as a path into a valid body with one schedule.
READ = [
    "spec.image", "spec.imagePullPolicy", "spec.env", "spec.podLabels", "spec.tolerations",
    "spec.commandStyle", "spec.suspend", "spec.probes", "spec.networkPolicy",
    "spec.broker", "spec.broker.url", "spec.broker.transport", "spec.broker.urlSecretRef",
    "spec.broker.redis", "spec.broker.rabbitmq", "spec.broker.sqs",
    "spec.celery", "spec.celery.configModule", "spec.celery.settings",
    "spec.celery.settings.task_time_limit", "spec.celery.settings.broker_transport_options",
    "spec.celery.resultBackendSecretRef", "spec.flower", "spec.flower.enabled",
    "spec.scheduler", "spec.scheduler.mode", "spec.scheduler.replicas",
    "spec.scheduler.scheduleStore", "spec.scheduler.lock",
    "spec.scheduler.lock.lockTimeSeconds", "spec.scheduler.lock.redisURL", "spec.pools",
    "spec.pools.0", "spec.pools.0.name", "spec.pools.0.queues", "spec.pools.0.queues.0",
    "spec.pools.0.concurrency", "spec.pools.0.minReplicas", "spec.pools.0.maxReplicas",
    "spec.pools.0.terminationGracePeriodSeconds", "spec.pools.0.image",
    "spec.pools.0.env", "spec.pools.0.resources", "spec.pools.0.extraArgs",
    "spec.pools.0.podDisruptionBudget", "spec.pools.0.autoscaling",
    "spec.pools.0.autoscaling.tolerance", "spec.pools.0.autoscaling.targetWaitSeconds",
    "spec.pools.0.autoscaling.activationBacklog", "spec.pools.0.autoscaling.schedules",
    "spec.pools.0.autoscaling.schedules.0", "spec.pools.0.autoscaling.schedules.0.cron",
    "spec.pools.0.autoscaling.schedules.0.timeZone",
    "spec.pools.0.autoscaling.schedules.0.durationSeconds",
    "spec.broker.urlSecretRef.name", "spec.broker.redis.globalKeyPrefix",
    "spec.broker.sqs.region", "spec.flower.basicAuthSecretRef",
    "spec.celery.resultBackendSecretRef.key", "spec.pools.0.autoscaling.schedules.0.name",
    "spec.pools.0.podDisruptionBudget.maxUnavailable", "spec.podSecurityContext",
    "metadata.name", "metadata.annotations",
]
_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                    st.floats(allow_nan=False), st.text(max_size=12),
                    st.sampled_from(["²", "0 0 30 2 *", "redis://:pw@r/0", "", "1e999"]))
_json = st.recursive(_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(path=st.sampled_from(READ), value=_json)
def test_parse_answers_any_value_with_a_fleet_or_a_spec_error(path: str, value: Any) -> None:
    """And what it answers with a Fleet, the builders and the status can evaluate."""
    raw = _scheduled()
    put(raw, path, value)
    try:
        fleet = parse(raw)
    except SpecError:
        return
    desired_objects(fleet, fleet.broker.transport or "redis", {})
    render(Observed(generation=1, now="t", fleet=fleet, transport=fleet.broker.transport), {})


def test_the_scale_down_and_service_time_knobs_default_and_accept_their_edges() -> None:
    def knobs(autoscaling: dict[str, Any]) -> tuple[int, int, int, float]:
        auto = parse(body(pools=[{"name": "default", "queues": ["q"],
                                  "autoscaling": autoscaling}])).pools[0].autoscaling
        return (auto.scale_down_percentile, auto.scale_down_step_percent,
                auto.panic_window_seconds, auto.target_wait_seconds)

    assert knobs({}) == (90, 25, 6, 2.0)
    assert knobs({"scaleDownPercentile": 100, "scaleDownStepPercent": 100,
                  "panicWindowSeconds": 0, "targetWaitSeconds": 0}) == (100, 100, 0, 0.0)
    assert knobs({"scaleDownPercentile": 1, "scaleDownStepPercent": 1,
                  "panicWindowSeconds": 600, "targetWaitSeconds": 600}) == (1, 1, 600, 600.0)


@pytest.mark.parametrize("knob", ["panicWindowSeconds", "targetWaitSeconds"])
def test_the_panic_window_and_the_wait_are_at_most_ten_minutes(knob: str) -> None:
    """A larger panic window would keep a pool woken from zero from ever scaling down."""
    with pytest.raises(SpecError) as raised:
        parse(body(pools=[{"name": "default", "queues": ["q"],
                           "autoscaling": {knob: 601}}]))
    assert raised.value.field == f"{WHERE}.{knob}"


@pytest.mark.parametrize(("autoscaling", "wait"), [
    ({}, 2.0),                                                  # neither: the default wait
    ({"targetBacklogPerReplica": 100}, 0.0),                    # the backlog target alone
    ({"targetBacklogPerReplica": 100, "targetWaitSeconds": 5}, 5.0),    # both, as given
    ({"targetWaitSeconds": 0}, 0.0),
])
def test_an_explicit_backlog_target_is_not_overridden_by_the_default_wait(
        autoscaling: dict[str, Any], wait: float) -> None:
    auto = parse(body(pools=[{"name": "default", "queues": ["q"],
                              "autoscaling": autoscaling}])).pools[0].autoscaling
    assert auto.target_wait_seconds == wait
