"""Schedules: time windows that raise a pool's minimum. Pure; ``now`` is passed in.

A window opens at every time its cron expression names, read on the wall clock of its
time zone, and stays open ``durationSeconds`` of real time. Around daylight-saving
changes that means (croniter's reading of a local wall clock):

- a start time the clock skips (02:30 on the night it jumps from 02:00 to 03:00) opens
  the window at the jump (03:00), so the warm-up is not lost;
- a start time the clock passes twice (02:30 on the night it goes back) opens the window
  at both passes;
- a window's length is measured in real seconds, so a window open across a change lasts
  exactly its duration.

While several windows are open the highest minimum wins.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace

from metamapper_operator.autoscale.policy import Bounds
from metamapper_operator.model import Schedule


@dataclass(frozen=True, slots=True)
class Window:
    """An open window: the schedule it comes from and when it closes (UTC)."""

    name: str
    min_replicas: int
    end: datetime.datetime


def window_of(schedule: Schedule, now: datetime.datetime) -> Window | None:
    """The schedule's window open at ``now`` (timezone-aware), or None."""
    opened = schedule.last_start(now)
    end = opened + datetime.timedelta(seconds=schedule.duration_seconds)
    if opened <= now < end:
        return Window(schedule.name, schedule.min_replicas, end)
    return None


def active_window(schedules: tuple[Schedule, ...], now: datetime.datetime) -> Window | None:
    """The open window with the highest minimum (the one closing last on a tie)."""
    open_now = [w for w in (window_of(s, now) for s in schedules) if w is not None]
    return max(open_now, key=lambda w: (w.min_replicas, w.end), default=None)


def raised(bounds: Bounds, window: Window | None) -> Bounds:
    """The bounds with the window's minimum, if higher (never above the maximum)."""
    if window is None or window.min_replicas <= bounds.min_replicas:
        return bounds
    return replace(bounds, min_replicas=min(window.min_replicas, bounds.max_replicas))


def next_change(schedules: tuple[Schedule, ...], now: datetime.datetime
                ) -> datetime.datetime | None:
    """The next time the open window may change (one opening or closing), or None: until
    then :func:`active_window` gives the same answer."""
    times = [s.next_start(now) for s in schedules]
    times += [w.end for w in (window_of(s, now) for s in schedules) if w is not None]
    return min(times, default=None)
