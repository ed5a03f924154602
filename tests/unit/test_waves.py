"""Beat-aware warm-up: the fleet's effective beat schedule, each entry's queue, when a
pool's floor rises and falls, the lead from measured pod starts, and the opt-out."""

from __future__ import annotations

import datetime
import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metamapper_operator.autoscale.policy import Bounds
from metamapper_operator.autoscale.waves import (
    DEFAULT_START_SECONDS,
    HOLD_SECONDS,
    MAX_START_SECONDS,
    STARTS_KEPT,
    Beat,
    Outlook,
    Start,
    Timed,
    Warming,
    Wave,
    beat_of,
    check_schedule,
    firings,
    lead_seconds,
    longest_gap,
    observe_starts,
    raised,
    warming,
)
from metamapper_operator.model import Fleet, Schedule, SpecError, WarmUp, parse
from tests.unit.sample import body

UTC = datetime.UTC


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


#: The scheduler's pods name Metamapper's metastore: beat sends every entry.
METASTORE = [{"name": "METAMAPPER_DB_HOST", "value": "metastore"}]


def fleet(settings: dict[str, Any] | None = None, **spec: Any) -> Fleet:
    raw = body(**{"env": METASTORE, **spec})
    raw["spec"]["celery"] = {"settings": settings or {}}
    return parse(raw)


def queues(beat: Beat) -> dict[str, str]:
    return {timed.entry: timed.queue for timed in beat.entries}


# --- the effective schedule ------------------------------------------------------------


def test_the_default_schedule_routes_each_entry_as_upstream_does() -> None:
    beat = beat_of(fleet())
    assert beat is not None and beat.ignored == ()
    assert queues(beat) == {
        "beat-scheduler-healthcheck": "default", "create-revisioner-runs": "revisioner",
        "queue-revisioner-runs": "revisioner", "detect-revisioner-run-timeouts": "revisioner",
        "create-check-executions": "checks", "queue-table-usage-jobs": "usage",
        "delete-90-day-table-usage": "usage", "queue-domain-verification": "default",
        "deleted-domain-failures": "default"}
    runs = next(t for t in beat.entries if t.entry == "queue-revisioner-runs")
    assert runs.schedule == Schedule("queue-revisioner-runs", "15,45 * * * *",
                                     int(HOLD_SECONDS), 0, "UTC")


@pytest.mark.parametrize(("spec", "metastore"), [
    ({"env": []}, False),
    ({"env": [{"name": "METAMAPPER_DB_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": "db", "key": "password"}}}]}, True),
    ({"env": [], "envFrom": [{"secretRef": {"name": "maybe-the-metastore"}}]}, True),
])
def test_without_a_metastore_beat_sends_only_the_entries_that_need_none(
        spec: dict[str, Any], metastore: bool) -> None:
    beat = beat_of(fleet({"beat_schedule": {"mine": {
        "task": "app.checks.tasks.scheduler.create_executions", "schedule": 60}}}, **spec))
    assert beat is not None
    if metastore:
        assert len(beat.entries) == 10
    else:   # as beat leaves them out (metamapper_beat.NEEDS_METASTORE)
        assert queues(beat) == {"beat-scheduler-healthcheck": "default"}


@pytest.mark.parametrize("scheduler", [{"enabled": False}, {"replicas": 0}])
def test_no_beat_no_waves(scheduler: dict[str, Any]) -> None:
    assert beat_of(fleet(scheduler=scheduler)) is None


def test_settings_change_remove_and_add_entries_as_the_worker_merges_them() -> None:
    beat = beat_of(fleet({
        "beat_schedule": {
            "queue-revisioner-runs": {"schedule": "*/30 * * * *"},   # the task stays
            "create-check-executions": None,                          # removed
            "mine": {"task": "app.revisioner.tasks.v1.core.start_run", "schedule": 90},
            "pinned": {"task": "app.healthchecks.tasks.heartbeat", "schedule": "0 3 * * *",
                       "options": {"queue": "usage"}},                # options win
        },
        "task_routes": {"app.healthchecks.*": {"queue": "checks"}},
        "timezone": "Europe/Berlin",
    }))
    assert beat is not None and beat.ignored == ()
    found = {t.entry: t for t in beat.entries}
    assert "create-check-executions" not in found
    assert found["queue-revisioner-runs"].schedule == Schedule(
        "queue-revisioner-runs", "*/30 * * * *", int(HOLD_SECONDS), 0, "Europe/Berlin")
    assert found["mine"] == Timed("mine", "revisioner", every_seconds=90.0)
    assert found["pinned"].queue == "usage"
    assert found["beat-scheduler-healthcheck"].queue == "checks"


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
def test_a_beat_schedule_set_to_null_leaves_no_entries(removed: Any) -> None:
    assert beat_of(fleet({"beat_schedule": removed})) == Beat()


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
def test_an_entry_removed_with_null_or_the_marker_sends_no_wave(removed: Any) -> None:
    beat = beat_of(fleet({"beat_schedule": {"beat-scheduler-healthcheck": removed}}))
    assert beat is not None and beat.ignored == ()
    assert "beat-scheduler-healthcheck" not in queues(beat)
    assert len(beat.entries) == 8


def test_removed_queue_and_clock_settings_fall_back_to_celerys_own() -> None:
    """Without the worker's ``task_default_queue`` and ``timezone`` Celery sends to its
    ``celery`` queue and reads crontabs in UTC; without the routes every task goes there."""
    beat = beat_of(fleet({"task_routes": "$remove", "task_default_queue": None,
                          "timezone": "$remove"}))
    assert beat is not None and beat.ignored == ()
    assert set(queues(beat).values()) == {"celery"}
    assert {t.schedule.time_zone for t in beat.entries if t.schedule} == {"UTC"}


EVERY_ENTRYS = ("timezone", "task_routes_list")


@pytest.mark.parametrize(("settings", "entry", "says"), [
    ({"beat_schedule": {"x": {"task": "t", "schedule": "*/5 * * *"}}}, "x", "five fields"),
    ({"beat_schedule": {"x": {"task": "t", "schedule": "99 * * * *"}}}, "x", "not a crontab"),
    ({"beat_schedule": {"x": {"task": "t", "schedule": "0 0 30 2 *"}}}, "x", "no time that exists"),
    ({"beat_schedule": {"x": {"task": "t", "schedule": "0 0 1 * mon"}}}, "x", "combines"),
    ({"beat_schedule": {"x": {"task": "t", "schedule": {"every": 5}}}}, "x", "neither"),
    ({"beat_schedule": {"x": {"task": "t", "schedule": 0}}}, "x", "positive"),
    ({"beat_schedule": {"x": {"task": "t", "schedule": True}}}, "x", "neither"),
    ({"beat_schedule": {"x": {"schedule": 5}}}, "x", "names no task"),
    ({"beat_schedule": {"x": "every minute"}}, "x", "not an object"),
    ({"timezone": "Mars/Olympus"}, "queue-revisioner-runs", "unknown time zone"),
    ({"task_routes": ["my.router"], "task_routes_list": 1}, "create-check-executions",
     "task_routes is not"),
    ({"task_routes": {"app.checks.tasks.*": 7}}, "create-check-executions", "neither a queue"),
])
def test_an_entry_the_operator_cannot_evaluate_is_ignored_alone(
        settings: dict[str, Any], entry: str, says: str) -> None:
    beat = beat_of(fleet(settings))
    assert beat is not None
    mine = [text for text in beat.ignored if text.startswith(f"beat entry {entry}:")]
    assert mine and says in mine[0], beat.ignored
    assert entry not in queues(beat)
    # The others are still evaluated, unless the problem is every entry's.
    assert bool(beat.entries) is not any(key in settings for key in EVERY_ENTRYS)


def test_a_beat_schedule_of_another_shape_ignores_the_whole_schedule() -> None:
    beat = beat_of(fleet({"beat_schedule": ["not", "a", "mapping"]}))
    assert beat == Beat(ignored=("beat_schedule is not an object: the operator cannot "
                                 "read it",))


# --- when the floor rises and falls ------------------------------------------------------


REVISIONER = Beat((Timed("runs", "revisioner",
                         schedule=Schedule("runs", "15,45 * * * *", 60, 0)),))


@pytest.mark.parametrize(("now", "floor"), [
    ("2026-12-07T10:14:00", 0),     # 60 s before, lead 40 s: cold
    ("2026-12-07T10:14:19", 0),
    ("2026-12-07T10:14:20", 2),     # lead seconds before it fires: warm
    ("2026-12-07T10:15:00", 2),
    ("2026-12-07T10:15:59", 2),     # held for a minute after it fired
    ("2026-12-07T10:16:00", 0),     # then the policy alone
    ("2026-12-07T10:30:00", 0),
])
def test_the_floor_rises_lead_seconds_before_and_falls_a_minute_after(now: str,
                                                                      floor: int) -> None:
    warm = warming(REVISIONER, ["revisioner"], 2, at(now), 40.0)
    assert warm.floor == floor


def test_the_next_wave_and_when_to_look_again() -> None:
    warm = warming(REVISIONER, ["revisioner", "other"], 1, at("2026-12-07T10:20:00"), 40.0)
    assert warm == Warming(floor=0, lead_seconds=40.0,
                           next_wave=Wave("runs", at("2026-12-07T10:45:00")),
                           until=at("2026-12-07T10:44:20"))
    # Warm, through the firing (the wave shown stays the one in progress) until the hold
    # ends: nothing changes when it fires.
    for now in ("2026-12-07T10:44:30", "2026-12-07T10:45:00", "2026-12-07T10:45:59"):
        warm = warming(REVISIONER, ["revisioner"], 1, at(now), 40.0)
        assert (warm.floor, warm.next_wave, warm.until) == (
            1, Wave("runs", at("2026-12-07T10:45:00")), at("2026-12-07T10:46:00"))
    warm = warming(REVISIONER, ["revisioner"], 1, at("2026-12-07T10:46:00"), 40.0)
    assert warm.floor == 0 and warm.next_wave == Wave("runs", at("2026-12-07T11:15:00"))


def test_entries_of_other_queues_do_not_warm_the_pool() -> None:
    warm = warming(REVISIONER, ["default"], 3, at("2026-12-07T10:15:00"), 40.0)
    assert warm == Warming(floor=0, lead_seconds=40.0, next_wave=None)


def test_the_earliest_entry_is_the_next_wave() -> None:
    beat = Beat((Timed("hourly", "q", schedule=Schedule("hourly", "0 * * * *", 60, 0)),
                 Timed("half", "q", schedule=Schedule("half", "30 * * * *", 60, 0))))
    warm = warming(beat, ["q"], 1, at("2026-12-07T10:10:00"), 30.0)
    assert warm.next_wave == Wave("half", at("2026-12-07T10:30:00"))


def test_an_entry_firing_more_often_than_lead_and_hold_keeps_the_pool_warm() -> None:
    beat = beat_of(fleet())
    assert beat is not None
    # Every minute: the checks pool stays warm, with no wave to show.
    warm = warming(beat, ["checks"], 1, at("2026-12-07T10:20:30"), 10.0)
    assert warm == Warming(floor=1, lead_seconds=10.0, next_wave=None,
                           continuous=("create-check-executions",), until=None)
    # Every 20 minutes is not: the default pool shows its next sparse wave.
    warm = warming(beat, ["default"], 1, at("2026-12-07T10:21:30"), 10.0)
    assert warm.continuous == ("beat-scheduler-healthcheck",) and warm.floor == 1
    assert warm.next_wave == Wave("queue-domain-verification", at("2026-12-07T10:40:00"))


def test_an_interval_entry_keeps_its_pool_warm_at_all_times() -> None:
    beat = Beat((Timed("often", "q", every_seconds=3600.0),))
    warm = warming(beat, ["q"], 2, at("2026-12-07T10:20:30"), 10.0)
    assert warm == Warming(floor=2, lead_seconds=10.0, next_wave=None,
                           continuous=("often",), until=None)


def test_ignored_entries_are_shown_to_every_pool() -> None:
    warm = warming(Beat(ignored=("beat entry x: why",)), ["q"], 1, at("2026-12-07T10:00:00"),
                   10.0)
    assert warm.ignored == ("beat entry x: why",) and warm.floor == 0


@pytest.mark.parametrize(("cron", "gap"), [
    ("* * * * *", 60.0), ("*/20 * * * *", 1200.0), ("15,45 * * * *", 1800.0),
    ("50,55 * * * *", 3300.0), ("0 */12 * * *", math.inf), ("* * * * mon-fri", math.inf),
    ("* 0-22 * * *", math.inf),
])
def test_longest_gap(cron: str, gap: float) -> None:
    assert longest_gap(cron) == gap


@given(minute=st.sets(st.integers(0, 59), min_size=1), seconds=st.integers(0, 3 * 3600))
def test_the_longest_gap_is_the_longest_between_firings(minute: set[int], seconds: int) -> None:
    cron = ",".join(map(str, sorted(minute))) + " * * * *"
    schedule = Schedule("x", cron, 60, 0)
    now = at("2026-12-07T00:00:00") + datetime.timedelta(seconds=seconds)
    gap = (schedule.next_start(now) - schedule.last_start(now)).total_seconds()
    assert gap <= longest_gap(cron)


@given(seconds=st.integers(0, 2 * 3600), lead=st.integers(1, 300))
def test_until_is_the_next_time_the_floor_may_change(seconds: int, lead: int) -> None:
    now = at("2026-12-07T10:00:00") + datetime.timedelta(seconds=seconds)
    warm = warming(REVISIONER, ["revisioner"], 1, now, float(lead))
    assert warm.until is not None and warm.until > now
    # Any time before `until` gives the same floor and the same next wave.
    for probe in (now + (warm.until - now) / 2, warm.until - datetime.timedelta(seconds=1)):
        if probe >= now:
            later = warming(REVISIONER, ["revisioner"], 1, probe, float(lead))
            assert replace(later, until=None) == replace(warm, until=None)


def test_the_floor_raises_the_minimum_never_past_the_maximum() -> None:
    bounds = Bounds(min_replicas=0, max_replicas=3, target=4)
    warm = Warming(floor=5, lead_seconds=1.0, next_wave=None)
    assert raised(bounds, warm).min_replicas == 3
    assert raised(bounds, None) == bounds
    assert raised(Bounds(min_replicas=4, max_replicas=9, target=4), warm).min_replicas == 5
    assert raised(bounds, Warming(floor=0, lead_seconds=1.0, next_wave=None)) == bounds


# --- the lead: measured pod starts ------------------------------------------------------


def test_the_lead_defaults_until_a_start_is_measured_then_takes_the_95th_percentile() -> None:
    assert lead_seconds((), 5.0) == DEFAULT_START_SECONDS + 5.0
    starts = tuple(Start(f"p{i}", float(i)) for i in range(1, 21))   # 1 .. 20 s
    assert lead_seconds(starts, 1.0) == 20.0    # the 19th of 20 (19 s) plus 1 s
    assert lead_seconds((Start("p", 4.2),), 0.5) == 5.0      # whole seconds, rounded up
    assert lead_seconds((Start("p", MAX_START_SECONDS),), 1.0) == MAX_START_SECONDS + 1.0


def test_each_pod_is_counted_once_and_the_newest_are_kept() -> None:
    starts = observe_starts((), {"a": 3.0, "b": 4.0})
    assert observe_starts(starts, {"a": 9.0, "b": 4.0}) is starts
    many = observe_starts(starts, {f"n{i:02}": 1.0 for i in range(STARTS_KEPT)})
    assert len(many) == STARTS_KEPT and Start("a", 3.0) not in many
    assert observe_starts((), {"clock-skew": -1.0}) == ()


def test_a_start_longer_than_the_limit_is_no_start_and_is_left_out() -> None:
    # A pod whose Ready condition came back hours after a broker outage: not its start.
    starts = observe_starts((), {"a": 12.0, "blip": 3 * 3600.0})
    assert starts == (Start("a", 12.0),)
    assert lead_seconds(starts, 1.0) == 13.0


# --- the spec ---------------------------------------------------------------------------


def test_warm_up_is_on_with_one_replica_by_default_and_can_be_turned_off() -> None:
    assert fleet().pools[0].autoscaling.warm_up == WarmUp(enabled=True, replicas=1)
    raw = body()
    raw["spec"]["pools"][0]["autoscaling"] = {"warmUp": {"enabled": False, "replicas": 3}}
    assert parse(raw).pools[0].autoscaling.warm_up == WarmUp(enabled=False, replicas=3)


@pytest.mark.parametrize("replicas", [0, -1, 1001])
def test_warm_up_replicas_are_bounded(replicas: int) -> None:
    raw = body()
    raw["spec"]["pools"][0]["autoscaling"] = {"warmUp": {"replicas": replicas}}
    with pytest.raises(SpecError) as err:
        parse(raw)
    assert err.value.field == "spec.pools[0].autoscaling.warmUp.replicas"


# --- the cost: read once for all fleets alike, each firing computed once --------------


def test_fleets_with_the_same_settings_share_one_reading_of_their_schedule() -> None:
    one, other = fleet({"timezone": "UTC"}), fleet({"timezone": "UTC"}, image="other:1")
    assert beat_of(one) is beat_of(other)
    assert beat_of(fleet({"timezone": "Europe/Berlin"})) is not beat_of(one)


def test_a_firing_is_remembered_while_now_stays_between_the_last_and_the_next(
        monkeypatch: pytest.MonkeyPatch) -> None:
    schedule = Schedule("x", "7,37 * * * *", 60, 0)
    asked: list[datetime.datetime] = []
    original = Schedule.next_start

    def counted(self: Schedule, now: datetime.datetime) -> datetime.datetime:
        asked.append(now)
        return original(self, now)

    monkeypatch.setattr(Schedule, "next_start", counted)
    first = firings(schedule, at("2026-12-07T10:10:00"))
    assert first == (at("2026-12-07T10:07:00"), at("2026-12-07T10:37:00"))
    assert firings(schedule, at("2026-12-07T10:36:59")) == first
    assert len(asked) == 1
    assert firings(schedule, at("2026-12-07T10:37:00")) == (at("2026-12-07T10:37:00"),
                                                           at("2026-12-07T11:07:00"))
    assert len(asked) == 2


# --- what does not move ----------------------------------------------------------------


def _outlooks(beat: Beat, queue: str, replicas: int, minimum: int, start: str,
              hours: int) -> list[tuple[datetime.datetime, Any]]:
    """The pool's outlook every 30 s for ``hours`` from ``start``, and when it changed."""
    changes: list[tuple[datetime.datetime, Any]] = []
    now = at(start)
    for _ in range(hours * 120):
        shown = warming(beat, [queue], replicas, now, 40.0, minimum).outlook
        if not changes or changes[-1][1] != shown:
            changes.append((now, shown))
        now += datetime.timedelta(seconds=30)
    return changes


@pytest.mark.parametrize("pool", ["default", "checks", "usage", "revisioner"])
def test_a_pool_whose_minimum_covers_the_warm_up_says_so_and_nothing_moves(pool: str) -> None:
    beat = beat_of(fleet())
    assert beat is not None
    changes = _outlooks(beat, pool, 1, 1, "2026-12-07T00:00:00", 24)
    assert [shown for _, shown in changes] == [Outlook(warm=False, covered=True)]
    warm = warming(beat, [pool], 1, at("2026-12-07T10:14:50"), 40.0, 1)
    assert (warm.floor, warm.until, warm.covered) == (0, None, True)


def test_warm_means_the_floor_raises_the_minimum() -> None:
    # 2 pods asked of a pool kept at 1: raised, so warm, before a wave; 1 asked: covered.
    warm = warming(REVISIONER, ["revisioner"], 2, at("2026-12-07T10:14:50"), 40.0, 1)
    assert warm.floor == 2 and warm.outlook.warm
    warm = warming(REVISIONER, ["revisioner"], 1, at("2026-12-07T10:14:50"), 40.0, 1)
    assert warm.floor == 0 and not warm.outlook.warm and warm.outlook.covered


@pytest.mark.parametrize("cron", ["* 9-17 * * *", "* 9-17 * * mon-fri"])
def test_an_entry_firing_often_in_its_active_hours_keeps_the_pool_warm_through_them(
        cron: str) -> None:
    """Warm from its lead before the first firing of the day to its hold after the last:
    the outlook changes twice a day, never at each firing."""
    beat = Beat((Timed("office", "q", schedule=Schedule("office", cron, 60, 0)),))
    changes = _outlooks(beat, "q", 1, 0, "2026-12-07T00:00:00", 24)  # a Monday
    assert changes == [
        (at("2026-12-07T00:00:00"), Outlook(
            warm=False, lead_seconds=40, next_wave=Wave("office", at("2026-12-07T09:00:00")))),
        (at("2026-12-07T08:59:30"), Outlook(warm=True, lead_seconds=40,
                                            continuous=("office",))),
        (at("2026-12-07T18:00:00"), Outlook(warm=False, lead_seconds=40,
            next_wave=Wave("office", at("2026-12-08T09:00:00")))),
    ]


# --- crontabs Celery refuses -------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "says"), [
    ("0 0 * * 7", "its day of week '7' holds 7, outside 0-6"),
    ("0 0 L * *", "its day of month 'L' holds 'L'"),
    ("every quarter hour", "is not five fields"),
])
def test_a_crontab_celery_refuses_refuses_the_fleet_naming_the_entry(schedule: str,
                                                                     says: str) -> None:
    refused = fleet({"beat_schedule": {"nightly": {"task": "t", "schedule": schedule}}})
    with pytest.raises(SpecError, match="every worker of the fleet would fail") as err:
        check_schedule(refused)
    assert err.value.field == "spec.celery.settings.beat_schedule.nightly.schedule"
    assert says in err.value.message
    # Were it read all the same, the warm-up would leave it out, alone.
    beat = beat_of(refused)
    assert beat is not None and "nightly" not in queues(beat)
    assert [text for text in beat.ignored if text.startswith("beat entry nightly:")]


@pytest.mark.parametrize("settings", [
    {}, {"beat_schedule": None}, {"beat_schedule": {"nightly": None}},
    {"beat_schedule": {"nightly": {"task": "t", "schedule": "0 0 * * sun"}}},
    {"beat_schedule": {"nightly": {"task": "t", "schedule": 30}}},
])
def test_a_schedule_celery_accepts_or_the_operator_does_not_read_is_not_refused(
        settings: dict[str, Any]) -> None:
    accepted = fleet(settings)
    assert check_schedule(accepted) is accepted
