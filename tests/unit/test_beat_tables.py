"""The shared beat tables (metamapper_beat): crontabs as Celery reads them, routes as
Celery's MapRoute reads them, and settings merged as the worker merges them."""

from __future__ import annotations

from typing import Any

import pytest

from metamapper_beat import (
    DEFAULT_QUEUE,
    REMOVE,
    ROUTES,
    SCHEDULE,
    Crontab,
    merge,
    route,
    task_routes,
    with_nulls,
)


def test_the_schedule_holds_upstreams_nine_entries_each_once() -> None:
    names = [entry.name for entry in SCHEDULE]
    assert len(names) == len(set(names)) == 9
    assert {route(task_routes(), entry.task, DEFAULT_QUEUE) for entry in SCHEDULE} == {
        "default", "checks", "revisioner", "usage"}


@pytest.mark.parametrize(("text", "cron"), [
    ("* * * * *", "* * * * *"),
    ("15,45 * * * *", "15,45 * * * *"),
    ("0 */12 1 6 mon-fri", "0 */12 1 6 mon-fri"),
])
def test_a_crontab_string_reads_in_cron_order(text: str, cron: str) -> None:
    crontab = Crontab.from_string(text)
    assert crontab.cron == cron
    assert Crontab(**crontab.fields()) == crontab


@pytest.mark.parametrize("text", ["* * * *", "*  * * * *", "* * * * * *", ""])
def test_a_crontab_string_needs_five_fields_split_by_single_spaces(text: str) -> None:
    with pytest.raises(ValueError, match="five fields"):
        Crontab.from_string(text)


def test_celerys_keyword_order_differs_from_the_cron_order() -> None:
    crontab = Crontab(minute="5", hour="4", day_of_week="3", day_of_month="2",
                      month_of_year="1")
    assert crontab.cron == "5 4 2 1 3"


ROUTED = {"app.checks.tasks.core.execute_check": "checks",
          "app.revisioner.tasks.v1.core.start_run": "revisioner",
          "app.definitions.tasks.usage.queue_table_usage_jobs": "usage",
          "app.definitions.tasks.core.hard_delete_datastore": "default",
          "app.healthchecks.tasks.heartbeat": "default"}


@pytest.mark.parametrize(("task", "queue"), ROUTED.items())
def test_upstreams_routes_as_a_table_and_as_celerys_setting_agree(task: str, queue: str) -> None:
    assert route(task_routes(), task, DEFAULT_QUEUE) == queue
    assert [glob for glob, _ in ROUTES] == list(task_routes())


@pytest.mark.parametrize(("routes", "task", "queue"), [
    # An exact name wins over an earlier glob (MapRoute looks names up first).
    ({"app.checks.*": {"queue": "a"}, "app.checks.x": {"queue": "b"}}, "app.checks.x", "b"),
    # Globs in their order.
    ({"app.*": "first", "app.checks.*": "second"}, "app.checks.x", "first"),
    # A route without a queue, and no route at all: the default queue.
    ({"app.*": {"routing_key": "r"}}, "app.x", "fallback"),
    ({"other.*": "q"}, "app.x", "fallback"),
    # A key without '*' is a name, not a pattern.
    ({"app.?": "q"}, "app.x", "fallback"),
])
def test_route_reads_task_routes_as_celery_does(routes: dict[str, Any], task: str,
                                                  queue: str) -> None:
    assert route(routes, task, "fallback") == queue


@pytest.mark.parametrize("value", [42, ["q"], {"queue": 7}])
def test_a_route_of_another_shape_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"app\.x"):
        route({"app.*": value}, "app.x", "fallback")


def test_merge_lays_objects_key_by_key_and_none_removes() -> None:
    base: dict[str, Any] = {
        "beat_schedule": {"a": {"task": "t", "schedule": 1}, "b": {"task": "u"}},
        "timezone": "UTC"}
    override = {"beat_schedule": {"a": {"schedule": "*/5 * * * *"}, "b": None,
                                  "c": {"task": "v"}}, "timezone": None}
    assert merge(base, override) == {"beat_schedule": {
        "a": {"task": "t", "schedule": "*/5 * * * *"}, "c": {"task": "v"}}}
    assert base["beat_schedule"]["a"]["schedule"] == 1  # not changed in place


@pytest.mark.parametrize("removed", [None, REMOVE], ids=["null", "marker"])
def test_merge_removes_a_key_set_to_null_or_the_marker(removed: Any) -> None:
    base = {"beat_schedule": {"heartbeat": {"task": "t", "schedule": 60},
                              "kept": {"task": "k", "schedule": 1, "options": {"expires": 5}}},
            "task_time_limit": 1200}
    override = {"beat_schedule": {"heartbeat": removed, "kept": {"options": {"expires": removed}},
                                  "absent": removed},
                "task_time_limit": removed, "never_set": removed}
    assert merge(base, override) == {"beat_schedule": {
        "kept": {"task": "k", "schedule": 1, "options": {}}}}


@pytest.mark.parametrize("removed", [None, REMOVE], ids=["null", "marker"])
def test_a_new_object_holds_no_removed_key(removed: Any) -> None:
    """An object the defaults lack (or hold as another shape) is merged into an empty one:
    a key in it set to remove is absent, never a null or the marker for Celery to read."""
    assert merge({"b": 3}, {"a": {"task": "t", "options": {"queue": removed}},
                            "b": {"c": removed, "d": 1}}) == {
        "a": {"task": "t", "options": {}}, "b": {"d": 1}}


def test_the_marker_is_only_a_whole_string_value() -> None:
    kept = {"a": "$removed", "b": [REMOVE], "c": "$REMOVE", "d": 0, "e": False, "f": ""}
    assert merge({}, kept) == kept
    assert with_nulls(kept) == kept


def test_with_nulls_spells_each_marker_as_null_at_any_depth() -> None:
    given = {"a": REMOVE, "b": {"c": REMOVE, "d": {"e": REMOVE, "f": 1}}, "g": None}
    assert with_nulls(given) == {"a": None, "b": {"c": None, "d": {"e": None, "f": 1}},
                                 "g": None}
    assert merge({"a": 1, "b": {"c": 2, "d": {"e": 3}}, "g": 4}, with_nulls(given)) == \
        merge({"a": 1, "b": {"c": 2, "d": {"e": 3}}, "g": 4}, given) == {"b": {"d": {"f": 1}}}


# Crontabs as Celery's own crontab reads them: those it refuses stop every worker (the
# worker builds each entry's schedule when it starts), so the operator must know them.
CRONTABS = [
    "* * * * *", "0 0 * * 0", "0 0 * * 6", "0 0 * * 7", "0 0 L * *", "0 0 1W * *",
    "0 0 * * 1#2", "0 0 ? * *", "60 * * * *", "59 23 31 12 *", "* 24 * * *",
    "* * 0 * *", "* * 32 * *", "* * * 0 *", "* * * 13 *", "*/15 * * * *", "*/0 * * * *",
    "*/ * * * *", "5/10 * * * *", "0-30/10 * * * *", "0-30/0 * * * *", "50-10 * * * *",
    "0 9-17 * * mon-fri", "0 9 * jan-mar sun", "0 0 * * monday", "0 0 * * funday",
    "1,,2 * * * *", "-5 * * * *", "1-2-3 * * * *", "0 0 * * sat-sun", "0 */12 * * *",
    "15,45 * * * *", "0 0 1 6 *", "x * * * *", "0 0 * * 1-7",
]


@pytest.mark.parametrize("text", CRONTABS)
def test_a_crontab_is_refused_exactly_when_celery_refuses_it(text: str) -> None:
    from celery.schedules import crontab

    try:
        crontab.from_string(text)
    except Exception:  # whatever Celery raises, the worker would not start
        celery_accepts = False
    else:
        celery_accepts = True
    refusal = Crontab.from_string(text).refusal()
    assert (refusal is None) is celery_accepts, refusal
    if refusal is not None:
        assert refusal.startswith(f"{text!r} is not a crontab Celery accepts")
