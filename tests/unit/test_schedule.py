"""Schedules: windows across their edges and daylight-saving changes, and bad input."""

from __future__ import annotations

import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from metamapper_operator.autoscale.policy import Bounds
from metamapper_operator.autoscale.schedule import Window, active_window, raised, window_of
from metamapper_operator.model import Schedule, SpecError, parse

UTC = datetime.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: datetime.tzinfo = UTC, fold: int = 0) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold)


HOURLY = Schedule("hourly", "55 * * * *", 600, 3)   # 10 min from :55, across the hour


@pytest.mark.parametrize(("now", "open_until"), [
    ("2026-11-28T07:54:59", None),                       # just before
    ("2026-11-28T07:55:00", "2026-11-28T08:05:00"),      # opens exactly at the start
    ("2026-11-28T08:00:00", "2026-11-28T08:05:00"),      # across the hour
    ("2026-11-28T08:04:59", "2026-11-28T08:05:00"),
    ("2026-11-28T08:05:00", None),                       # closed exactly at the end
    ("2026-11-28T08:30:00", None),
])
def test_window_edges(now: str, open_until: str | None) -> None:
    window = window_of(HOURLY, at(now))
    assert (window.end if window else None) == (at(open_until) if open_until else None)


@pytest.mark.parametrize(("schedule", "now", "open_from"), [
    # Spring forward in Berlin (2026-03-29, 02:00 -> 03:00 local): 02:30 does not exist;
    # the window opens at the jump, 03:00 CEST = 01:00 UTC.
    (Schedule("night", "30 2 * * *", 1800, 2, "Europe/Berlin"),
     at("2026-03-29T01:10:00"), at("2026-03-29T01:00:00")),
    # Fall back (2026-10-25, 03:00 CEST -> 02:00 CET): 02:30 happens twice, at 00:30 UTC
    # and 01:30 UTC; a window opens at each.
    (Schedule("night", "30 2 * * *", 1800, 2, "Europe/Berlin"),
     at("2026-10-25T00:40:00"), at("2026-10-25T00:30:00")),
    (Schedule("night", "30 2 * * *", 1800, 2, "Europe/Berlin"),
     at("2026-10-25T01:40:00"), at("2026-10-25T01:30:00")),
    # An ordinary day: 02:30 CET is 01:30 UTC.
    (Schedule("night", "30 2 * * *", 1800, 2, "Europe/Berlin"),
     at("2026-11-28T01:45:00"), at("2026-11-28T01:30:00")),
    # Weekdays at 09:00 New York; Monday after the US change (2026-03-08): 13:00 UTC.
    (Schedule("office", "0 9 * * 1-5", 3600, 4, "America/New_York"),
     at("2026-03-09T13:30:00"), at("2026-03-09T13:00:00")),
    # ... and the Friday before it, still EST: 14:00 UTC.
    (Schedule("office", "0 9 * * 1-5", 3600, 4, "America/New_York"),
     at("2026-03-06T14:59:59"), at("2026-03-06T14:00:00")),
])
def test_windows_across_daylight_saving(schedule: Schedule, now: datetime.datetime,
                                        open_from: datetime.datetime) -> None:
    window = window_of(schedule, now)
    assert window is not None
    assert window.end == open_from + datetime.timedelta(seconds=schedule.duration_seconds)


@pytest.mark.parametrize("now", [
    at("2026-03-29T00:59:00"),   # before the spring jump: not yet open
    at("2026-10-25T01:00:00"),   # between the two passes of 02:30 in the fall
    at("2026-03-07T14:30:00"),   # a Saturday: weekdays only
])
def test_windows_closed_across_daylight_saving(now: datetime.datetime) -> None:
    schedules = (Schedule("night", "30 2 * * *", 1800, 2, "Europe/Berlin"),
                 Schedule("office", "0 9 * * 1-5", 3600, 4, "America/New_York"))
    assert active_window(schedules, now) is None


def test_a_window_lasts_its_real_seconds_across_the_change() -> None:
    """01:30 Berlin on the fall-back night, 2 h: it ends 2 h later in real time (02:30
    the second time, CET), not at 03:30 on the wall clock."""
    schedule = Schedule("late", "30 1 * * *", 7200, 2, "Europe/Berlin")
    start = at("2026-10-25T01:30:00", BERLIN)
    window = window_of(schedule, start)
    assert window is not None
    assert window.end == at("2026-10-25T02:30:00", BERLIN, fold=1).astimezone(UTC)
    assert window_of(schedule, window.end) is None


def test_the_highest_open_minimum_wins_and_never_passes_the_maximum() -> None:
    schedules = (Schedule("a", "0 8 * * *", 3600, 2), Schedule("b", "30 8 * * *", 600, 5))
    now = at("2026-11-28T08:35:00")
    window = active_window(schedules, now)
    assert window == Window("b", 5, at("2026-11-28T08:40:00"))
    bounds = Bounds(min_replicas=1, max_replicas=4, target=2)
    assert raised(bounds, window).min_replicas == 4
    assert raised(bounds, active_window(schedules, at("2026-11-28T08:45:00"))).min_replicas == 2
    assert raised(bounds, None) == bounds
    assert raised(Bounds(min_replicas=3, max_replicas=4, target=2),
                  Window("a", 2, now)).min_replicas == 3


def body(schedule: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "mm"}, "spec": {
        "image": "img", "broker": {"url": "redis://r:6379/0"},
        "pools": [{"name": "default", "queues": ["default"],
                   "autoscaling": {"schedules": [schedule]}}]}}


def test_a_schedule_is_parsed_with_utc_by_default() -> None:
    fleet = parse(body({"name": "n", "cron": "0 * * * *", "durationSeconds": 60,
                        "minReplicas": 2}))
    assert fleet.pools[0].autoscaling.schedules == (Schedule("n", "0 * * * *", 60, 2, "UTC"),)


@pytest.mark.parametrize(("schedule", "field", "says"), [
    ({"cron": "61 * * * *"}, "spec.pools[0].autoscaling.schedules[0].cron",
     "is not a cron expression of five fields"),
    ({"cron": "0 0 * * * *"}, "spec.pools[0].autoscaling.schedules[0].cron",
     "is not a cron expression of five fields"),
    ({"timeZone": "Mars/Olympus"}, "spec.pools[0].autoscaling.schedules[0].timeZone",
     "unknown time zone 'Mars/Olympus'"),
    ({"timeZone": "../etc/passwd"}, "spec.pools[0].autoscaling.schedules[0].timeZone",
     "unknown time zone"),
])
def test_bad_schedules_name_the_field(schedule: dict[str, Any], field: str, says: str) -> None:
    raw = {"name": "n", "cron": "0 * * * *", "durationSeconds": 60, "minReplicas": 2,
           **schedule}
    with pytest.raises(SpecError) as err:
        parse(body(raw))
    assert err.value.field == field
    assert says in err.value.message
