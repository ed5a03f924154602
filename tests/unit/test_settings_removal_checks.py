"""What removing a default Celery setting (``"$remove"`` or null) may not do: leave a beat
entry the worker cannot build, reach a reader of the transport options as a value, take
away a setting the operator sets itself, or sit inside a list as a literal string."""

from __future__ import annotations

from typing import Any

import pytest

from metamapper_operator.autoscale.waves import check_schedule
from metamapper_operator.builders import celery_settings
from metamapper_operator.contradictions import short_visibility_timeout
from metamapper_operator.model import Fleet, SpecError, parse, transport_options
from tests.unit.sample import body

SETTINGS = "spec.celery.settings"
FAILS = "every worker of the fleet would fail to start"


def fleet(settings: dict[str, Any], **spec: Any) -> Fleet:
    return parse(body(celery={"settings": settings}, **spec))


# --- beat entries the worker cannot build ----------------------------------------------


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
@pytest.mark.parametrize(("entry", "field"), [
    # A new entry whose schedule is removed: nothing of the worker's is left under it.
    ("nightly", "nightly.schedule"),
    # The worker's own heartbeat entry, its schedule removed.
    ("beat-scheduler-healthcheck", "beat-scheduler-healthcheck.schedule"),
])
def test_a_beat_entry_whose_schedule_is_removed_is_refused(
        removed: Any, entry: str, field: str) -> None:
    given = {"beat_schedule": {entry: {"task": "metamapper.health", "schedule": removed}}}
    with pytest.raises(SpecError, match=FAILS) as err:
        check_schedule(fleet(given))
    assert err.value.field == f"{SETTINGS}.beat_schedule.{field}"


@pytest.mark.parametrize(("entry", "field"), [
    ({"task": "metamapper.health"}, "nightly.schedule"),
    ({"schedule": 30}, "nightly.task"),
    ({"task": "$remove", "schedule": 30}, "nightly.task"),
    (5, "nightly"),
    ("every night", "nightly"),
])
def test_a_beat_entry_without_task_or_schedule_or_not_an_object_is_refused(
        entry: Any, field: str) -> None:
    with pytest.raises(SpecError, match=FAILS) as err:
        check_schedule(fleet({"beat_schedule": {"nightly": entry}}))
    assert err.value.field == f"{SETTINGS}.beat_schedule.{field}"


def test_the_worker_defaults_task_kept_under_a_new_schedule_passes() -> None:
    """Only the schedule is given: the entry keeps the worker image's task (merged)."""
    accepted = fleet({"beat_schedule": {"beat-scheduler-healthcheck": {"schedule": 60}}})
    assert check_schedule(accepted) is accepted


def test_a_beat_schedule_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(SpecError, match=FAILS) as err:
        check_schedule(fleet({"beat_schedule": ["not", "a", "mapping"]}))
    assert err.value.field == f"{SETTINGS}.beat_schedule"


# --- removed transport options are kombu's own, for every reader -------------------------


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
def test_the_options_the_drain_is_given_hold_no_removed_option(removed: Any) -> None:
    """The drain's Celery app gets these options: a None there fails every inspect
    (kombu copies it onto the channel: priority_steps iterated, a timeout subtracted)."""
    removing = {"visibility_timeout": removed, "priority_steps": removed, "sep": ":"}
    given = fleet({"broker_transport_options": removing})
    assert transport_options(celery_settings(given)) == {"sep": ":", "global_keyprefix": "mm:"}
    # The pods still get the removals, so the worker drops its own defaults.
    assert celery_settings(given)["broker_transport_options"]["visibility_timeout"] is None


def test_a_removed_visibility_timeout_is_kombus_own_when_warning() -> None:
    """SQS's own visibility timeout (1800 s) is below a 3000 s time limit: tasks run twice."""
    given = fleet({"task_time_limit": 3000,
                   "broker_transport_options": {"visibility_timeout": "$remove"}},
                  broker={"url": "sqs://"})
    message = short_visibility_timeout(celery_settings(given), "sqs")
    assert message is not None and "(1800 s)" in message


def test_an_unset_visibility_timeout_is_the_worker_images_when_warning() -> None:
    """The worker image sets 3600 s for every transport: above a 2400 s limit on SQS too."""
    given = fleet({"task_time_limit": 2400}, broker={"url": "sqs://"})
    assert short_visibility_timeout(celery_settings(given), "sqs") is None


def test_transport_options_removed_as_a_whole_are_kombus_own_when_warning() -> None:
    given = fleet({"task_time_limit": 3000, "broker_transport_options": "$remove"},
                  broker={"url": "sqs://"})
    message = short_visibility_timeout(celery_settings(given), "sqs")
    assert message is not None and "(1800 s)" in message


# --- settings the operator sets itself -------------------------------------------------


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
def test_removing_the_hard_time_limit_is_refused(removed: Any) -> None:
    """The operator sizes grace periods, the in-flight age and its warnings by it."""
    with pytest.raises(SpecError, match="set a number of seconds") as err:
        fleet({"task_time_limit": removed})
    assert err.value.field == f"{SETTINGS}.task_time_limit"



@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
@pytest.mark.parametrize("key", ["beat_scheduler", "redbeat_key_prefix"])
def test_removing_what_the_redis_schedule_store_sets_is_refused(key: str, removed: Any) -> None:
    with pytest.raises(SpecError, match="scheduleStore is Redis") as err:
        fleet({key: removed})
    assert err.value.field == f"{SETTINGS}.{key}"


def test_removing_them_with_the_file_store_passes() -> None:
    given = fleet({"beat_scheduler": "$remove", "redbeat_key_prefix": "$remove"},
                  scheduler={"scheduleStore": "File"})
    assert given.celery_settings["beat_scheduler"] is None


@pytest.mark.parametrize("broker", [
    {"url": "redis://redis:6379/0", "redis": {"globalKeyPrefix": "mm:"}},
    {"url": "sqs://", "sqs": {"region": "eu-west-1"}},
    {"url": "sqs://", "sqs": {"queueNamePrefix": "mm-"}},
], ids=["key prefix", "region", "queue name prefix"])
def test_removing_the_transport_options_the_operator_adds_to_is_refused(
        broker: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="one by one") as err:
        fleet({"broker_transport_options": "$remove"}, broker=broker)
    assert err.value.field == f"{SETTINGS}.broker_transport_options"


def test_removing_the_transport_options_the_operator_adds_nothing_to_passes() -> None:
    given = fleet({"broker_transport_options": "$remove"},
                  broker={"url": "redis://redis:6379/0"})
    assert "broker_transport_options" not in transport_options(celery_settings(given))
    assert celery_settings(given)["broker_transport_options"] is None


# --- the marker inside a list ----------------------------------------------------------


@pytest.mark.parametrize(("settings", "field"), [
    ({"imports": ["$remove"]}, "imports[0]"),
    ({"task_routes": [{"a.*": "$remove"}]}, "task_routes[0].a.*"),
    ({"x": {"y": [1, ["$remove"]]}}, "x.y[1][0]"),
])
def test_the_marker_inside_a_list_is_refused(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match="literal string") as err:
        fleet(settings)
    assert err.value.field == f"{SETTINGS}.{field}"
