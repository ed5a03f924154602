"""Beat-aware warm-up: a pool is warm before its fleet's own beat sends it work. Pure;
``now`` is passed in.

A Metamapper's scheduler runs celery beat with the worker image's schedule
(:data:`metamapper_beat.SCHEDULE`) under the entries of ``celery.settings``'
``beat_schedule`` (merged as the worker merges them, with the same
:func:`metamapper_beat.merge`: an entry key by key, a key set to ``null`` removes one, as
the model spells ``$remove``). Each entry's task goes to a queue (its ``options.queue``,
else the routes: upstream's under ``celery.settings``' ``task_routes``, else
``task_default_queue``; a removed one is Celery's own: no routes, ``celery``, ``UTC``), and
so to the pool consuming that queue. :func:`beat_of` reads that schedule once per spec;
:func:`warming` tells a pool, at a time, whether the floor of its warm-up is raised:

- from ``lead`` seconds before an entry of its queues fires (the pool's measured pod
  start, :func:`lead_seconds`) until :data:`HOLD_SECONDS` after, its minimum is at least
  ``warmUp.replicas``; then the normal policy takes over (the wave's backlog keeps the
  pods it needs, the stabilization window and the cooldown the rest);
- an entry that fires again sooner than that (every minute, say) keeps the pool warm
  while it does (``continuous``): at all times when it does every hour of every day, for
  its active hours when it does only then (``* 9-17 * * mon-fri``), and so does an
  interval entry (a number of seconds): beat counts intervals from its own start, which
  the operator cannot know, so such an entry is treated as due at any moment;
- a pool whose ``minReplicas`` already covers ``warmUp.replicas`` (capped at its
  ``maxReplicas``) is never raised: its warm-up says so (``covered``) and nothing else, so
  its status does not move with the waves;
- a crontab Celery refuses, or an entry of the merged schedule that is not an object or
  lacks its task or schedule (removed with ``$remove``, say), is no entry to warm for: the
  worker builds every entry's schedule when it starts, so not one pod of the fleet would
  start. The fleet is refused as an invalid spec naming the entry (:func:`check_schedule`);
- an entry the operator cannot evaluate (a schedule or route of another shape, a time
  zone it does not know) is left out and named in ``ignored``: it costs that fleet its
  warm-up for that entry, nothing else.

Without a metastore (no ``METAMAPPER_DB_*`` in the fleet's env and no ``envFrom`` that may
carry one) beat leaves out the entries whose task needs it (``NEEDS_METASTORE``), and so
does the warm-up.

Crontabs are read on the clock of Celery's ``timezone`` (``UTC`` by default), as
:class:`~metamapper_operator.model.Schedule` reads a window's cron expression.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from metamapper_beat import (
    DEFAULT_QUEUE,
    METASTORE_ENV,
    NEEDS_METASTORE,
    SCHEDULE,
    TIMEZONE,
    Crontab,
    merge,
    route,
    task_routes,
)
from metamapper_operator.autoscale.policy import Bounds
from metamapper_operator.model import TRIAL_INSTANT, Fleet, Schedule, SpecError

#: The Celery settings the beat schedule depends on.
BEAT_SETTINGS = ("beat_schedule", "task_routes", "task_default_queue", "timezone")
#: Celery's own value of each of them, in force when the settings remove the worker's.
CELERY_DEFAULTS: dict[str, Any] = {
    "beat_schedule": {}, "task_routes": {}, "task_default_queue": "celery", "timezone": "UTC"}
#: The pod start assumed until one of the pool's pods has been seen start.
DEFAULT_START_SECONDS = 30.0
#: The longest pod start the lead follows: a longer one (a pod whose Ready condition came
#: back after a broker outage, say) is no start and is left out.
MAX_START_SECONDS = 600.0
#: How long the floor stays raised after an entry fires.
HOLD_SECONDS = 60.0
#: Pod starts kept per pool, and the share of them the lead covers.
STARTS_KEPT = 20
PERCENTILE = 0.95


@dataclass(frozen=True, slots=True)
class Timed:
    """A beat entry the operator can evaluate: the queue its task goes to, and its
    crontab (as a :class:`Schedule` on Celery's clock) or its interval in seconds."""

    entry: str
    queue: str
    schedule: Schedule | None = None
    every_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Beat:
    """A fleet's effective beat schedule: the entries the operator can evaluate, and those
    it cannot, each with why."""

    entries: tuple[Timed, ...] = ()
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Wave:
    """An entry's next firing."""

    entry: str
    at: datetime.datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class Outlook:
    """What status shows of a pool's warm-up."""

    warm: bool
    lead_seconds: int | None = None    # None when covered: no lead to keep
    next_wave: Wave | None = None
    continuous: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    covered: bool = False              # minReplicas covers warmUp.replicas


@dataclass(frozen=True, slots=True)
class Warming:
    """What the warm-up asks of one pool now, until ``until`` (None: for ever)."""

    floor: int                         # the minimum it raises the pool to (0: none)
    lead_seconds: float
    next_wave: Wave | None             # the wave in progress, else the next one
    continuous: tuple[str, ...] = ()   # entries that keep the pool warm now
    ignored: tuple[str, ...] = ()
    until: datetime.datetime | None = None
    covered: bool = False              # minReplicas covers the warm-up: never raised

    @property
    def outlook(self) -> Outlook:
        if self.covered:
            return Outlook(warm=False, covered=True, ignored=self.ignored)
        return Outlook(warm=self.floor > 0, lead_seconds=math.ceil(self.lead_seconds),
                       next_wave=self.next_wave, continuous=self.continuous,
                       ignored=self.ignored)


@dataclass(frozen=True, slots=True)
class Start:
    """How long one pod took from its creation to Ready, in seconds."""

    pod: str
    seconds: float


def beat_of(fleet: Fleet) -> Beat | None:
    """The fleet's effective beat schedule; None when it runs no beat."""
    scheduler = fleet.scheduler
    if not scheduler.enabled or scheduler.replicas == 0:
        return None
    read = {key: fleet.celery_settings[key] for key in BEAT_SETTINGS
            if key in fleet.celery_settings}
    # Fleets made from one template share their schedule: it is read once for all.
    return _beat(json.dumps(read, sort_keys=True, default=repr), has_metastore(fleet))


@functools.lru_cache(maxsize=256)
def _beat(read: str, metastore: bool) -> Beat:
    """The beat schedule under the settings of :data:`BEAT_SETTINGS` (as JSON): the
    worker's defaults with them merged in, and Celery's own for the ones they remove."""
    settings = {**CELERY_DEFAULTS, **merge(_worker_defaults(), json.loads(read))}
    zone, default = settings["timezone"], settings["task_default_queue"]
    routes, entries = _object(settings, "task_routes"), _object(settings, "beat_schedule")
    if isinstance(entries, str):
        return Beat(ignored=(entries,))
    timed: list[Timed] = []
    ignored: list[str] = []
    for name, raw in entries.items():
        if not metastore and isinstance(raw, Mapping) and raw.get("task") in NEEDS_METASTORE:
            continue   # beat leaves it out: it sends nothing
        try:
            timed.append(_timed(str(name), raw, zone, routes, default))
        except (ValueError, TypeError, KeyError, OverflowError) as err:
            ignored.append(f"beat entry {name}: {err}")
    return Beat(tuple(timed), tuple(ignored))


def _object(settings: Mapping[str, Any], key: str) -> Mapping[str, Any] | str:
    """The setting ``key``; a message when it is not a mapping."""
    value = settings[key]
    if isinstance(value, Mapping):
        return value
    return f"{key} is not an object: the operator cannot read it"


def _worker_defaults() -> dict[str, Any]:
    """The worker image's value of each of :data:`BEAT_SETTINGS` (``metamapper.defaults``)."""
    return {
        "beat_schedule": {e.name: {"task": e.task, "schedule": e.schedule} for e in SCHEDULE},
        "task_routes": task_routes(), "task_default_queue": DEFAULT_QUEUE, "timezone": TIMEZONE}


def check_schedule(fleet: Fleet) -> Fleet:
    """``fleet``, unless its ``beat_schedule``, merged over the worker image's as the worker
    merges it, holds an entry that is not an object, names no task or no schedule, or has a
    crontab string Celery refuses: the worker builds every entry's schedule when it starts
    (whether or not beat runs), so not one of its pods would start. :class:`SpecError`
    names the entry."""
    given = fleet.celery_settings.get("beat_schedule")
    where = "spec.celery.settings.beat_schedule"
    fails = "every worker of the fleet would fail to start"
    if given is None:   # absent, or removed: no entry but the worker's
        given = {}
    if not isinstance(given, Mapping):
        raise SpecError(where, f"must be an object; {fails}")
    for name, raw in merge(_worker_defaults()["beat_schedule"], given).items():
        if not isinstance(raw, Mapping):
            raise SpecError(f"{where}.{name}", f"must be an object; {fails}")
        for key in ("task", "schedule"):
            if raw.get(key) is None:
                raise SpecError(f"{where}.{name}.{key}", f"is required; {fails}")
        schedule = raw["schedule"]
        if not isinstance(schedule, str):
            continue
        try:
            why = Crontab.from_string(schedule).refusal()
        except ValueError as err:
            why = str(err)
        if why is not None:
            raise SpecError(f"{where}.{name}.schedule", f"{why}; {fails}")
    return fleet


def has_metastore(fleet: Fleet) -> bool:
    """Whether the scheduler's pods may name Metamapper's metastore: a ``METAMAPPER_DB_*``
    among the fleet's env, or any ``envFrom`` (whose Secret or ConfigMap may hold one; the
    operator does not read it)."""
    return bool(fleet.pods.env_from) or any(
        var.get("name") in METASTORE_ENV for var in fleet.pods.env)


def _timed(name: str, raw: Any, zone: Any, routes: Mapping[str, Any] | str,
           default: Any) -> Timed:
    if not isinstance(raw, Mapping):
        raise ValueError("not an object")
    task, schedule = raw.get("task"), raw.get("schedule")
    if not isinstance(task, str):
        raise ValueError("names no task")
    options = raw.get("options") or {}
    queue = options.get("queue") if isinstance(options, Mapping) else None
    if not isinstance(queue, str):
        if isinstance(routes, str):
            raise ValueError(routes)
        if not isinstance(default, str):
            raise ValueError("task_default_queue is not a queue name")
        queue = route(routes, task, default)
    if isinstance(schedule, bool) or not isinstance(schedule, int | float | str | Crontab):
        raise ValueError("its schedule is neither a crontab string nor a number of seconds")
    if isinstance(schedule, int | float):
        if not math.isfinite(schedule) or schedule <= 0:
            raise ValueError(f"interval {schedule!r} is not a positive number of seconds")
        return Timed(name, queue, every_seconds=float(schedule))
    crontab = Crontab.from_string(schedule) if isinstance(schedule, str) else schedule
    refusal = crontab.refusal()
    if refusal is not None:
        raise ValueError(refusal)
    if not croniter.is_valid(crontab.cron):
        raise ValueError(f"{crontab.cron!r} is not a crontab the operator can evaluate")
    if "*" not in (crontab.day_of_month, crontab.day_of_week):
        # cron (and croniter) fire on days matching either; Celery only on days matching both.
        raise ValueError(f"{crontab.cron!r} sets both the day of the month and the day of "
                         "the week, which Celery combines as cron does not")
    if not isinstance(zone, str):
        raise ValueError("the timezone setting is not a time zone name")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {zone!r}") from None
    evaluated = Schedule(name, crontab.cron, int(HOLD_SECONDS), 0, zone)
    try:
        evaluated.last_start(TRIAL_INSTANT)
        evaluated.next_start(TRIAL_INSTANT)
    except (ValueError, OverflowError):  # croniter's errors are ValueErrors
        raise ValueError(f"{crontab.cron!r} names no time that exists") from None
    return Timed(name, queue, schedule=evaluated)


@functools.lru_cache(maxsize=1024)
def longest_gap(cron: str) -> float:
    """The longest time between two firings of ``cron``, when it fires every hour of
    every day (only the minutes differ); ``math.inf`` otherwise (it then pauses at least
    an hour, longer than any lead)."""
    minutes, *others = croniter(cron).expanded
    if any(field != ["*"] for field in others):
        return math.inf
    fires = list(range(60)) if minutes == ["*"] else sorted(int(m) for m in minutes)
    gaps = [b - a for a, b in itertools.pairwise(fires)] + [fires[0] + 60 - fires[-1]]
    return 60.0 * max(gaps)


_FIRINGS: dict[tuple[str, str], tuple[datetime.datetime, datetime.datetime]] = {}
FIRINGS_KEPT = 1024


def firings(schedule: Schedule, now: datetime.datetime
            ) -> tuple[datetime.datetime, datetime.datetime]:
    """The schedule's last firing at or before ``now`` and its next one after, remembered
    by cron expression and time zone while ``now`` stays between them: every pool of every
    fleet on upstream's schedule asks the same, at the same times."""
    key = (schedule.cron, schedule.time_zone)
    known = _FIRINGS.get(key)
    if known is not None and known[0] <= now < known[1]:
        return known
    found = (schedule.last_start(now), schedule.next_start(now))
    if len(_FIRINGS) >= FIRINGS_KEPT:
        _FIRINGS.clear()
    _FIRINGS[key] = found
    return found


def warming(beat: Beat, queues: Iterable[str], replicas: int, now: datetime.datetime,
            lead: float, min_replicas: int = 0) -> Warming:
    """The warm-up of a pool consuming ``queues`` at ``now`` (timezone-aware), with pods
    that take ``lead`` seconds to be ready: the floor is ``replicas`` (already capped at
    the pool's maximum) from ``lead`` before each of its entries fires until
    :data:`HOLD_SECONDS` after. A pool whose ``min_replicas`` covers ``replicas`` is
    never raised (``covered``: nothing to evaluate, nothing that changes).

    ``until`` is the next time any of that may change: the floor, the wave shown (the
    wave in progress until its hold ends, then the next) or the entries keeping the pool
    warm (:func:`_in_run`: from ``lead`` before the first of a run of firings closer than
    ``lead`` and the hold, until the hold after its last; looked at again at each)."""
    if replicas <= min_replicas:
        return Warming(floor=0, lead_seconds=lead, next_wave=None, ignored=beat.ignored,
                       covered=True)
    consumed = set(queues)
    mine = [timed for timed in beat.entries if timed.queue in consumed]
    hold = datetime.timedelta(seconds=HOLD_SECONDS)
    ahead = datetime.timedelta(seconds=lead)
    continuous: list[str] = []
    waves: list[Wave] = []
    changes: list[datetime.datetime] = []
    warm = False
    for timed in mine:
        if timed.schedule is None or longest_gap(timed.schedule.cron) <= lead + HOLD_SECONDS:
            continuous.append(timed.entry)   # at all times
            continue
        fired, due = firings(timed.schedule, now)
        run_until = _in_run(timed.schedule, fired, due, now, ahead, hold)
        if run_until is not None:
            continuous.append(timed.entry)
            changes.append(run_until)
            continue
        warm = warm or now < fired + hold or due - ahead <= now
        waves.append(Wave(timed.entry, fired if now < fired + hold else due))
        changes += [t for t in (fired + hold, due - ahead, due + hold) if t > now]
    return Warming(floor=replicas if warm or continuous else 0, lead_seconds=lead,
                   next_wave=min(waves, key=lambda w: (w.at, w.entry), default=None),
                   continuous=tuple(continuous), ignored=beat.ignored,
                   until=min(changes, default=None))


def _in_run(schedule: Schedule, fired: datetime.datetime, due: datetime.datetime,
            now: datetime.datetime, ahead: datetime.timedelta, hold: datetime.timedelta
            ) -> datetime.datetime | None:
    """When to look again at an entry that keeps the pool warm now as part of a run of
    firings closer than ``ahead`` and ``hold`` (every minute from 9 to 17, say); None when
    it does not. The run counts from ``ahead`` before its first firing until ``hold`` after
    its last, so the pool's warm-up changes once as the run begins and once as it ends."""
    span = ahead + hold
    if due - fired <= span:                                   # within the run
        return due
    if now < fired + hold and fired - schedule.last_start(
            fired - datetime.timedelta(seconds=1)) <= span:   # its last firing's hold
        return fired + hold
    if due - ahead <= now and schedule.next_start(due) - due <= span:   # its first's lead
        return due
    return None


def raised(bounds: Bounds, warm: Warming | None) -> Bounds:
    """The bounds with the warm-up's floor, if higher (never above the maximum)."""
    if warm is None or warm.floor <= bounds.min_replicas:
        return bounds
    return replace(bounds, min_replicas=min(warm.floor, bounds.max_replicas))


def observe_starts(starts: tuple[Start, ...], measured: Mapping[str, float]
                   ) -> tuple[Start, ...]:
    """``starts`` with the pods of ``measured`` not seen yet, the newest
    :data:`STARTS_KEPT` kept; a start longer than :data:`MAX_START_SECONDS` is no pod
    start (its Ready condition came back later) and is left out."""
    known = {start.pod for start in starts}
    new = [Start(pod, seconds) for pod, seconds in sorted(measured.items())
           if pod not in known and 0 <= seconds <= MAX_START_SECONDS]
    if not new:
        return starts
    return (*starts, *new)[-STARTS_KEPT:]


def lead_seconds(starts: tuple[Start, ...], poll_seconds: float) -> float:
    """How long before a wave the floor rises: the 95th percentile of the measured pod
    starts (:data:`DEFAULT_START_SECONDS` before any), plus one polling interval (the
    floor is seen at the next cycle), in whole seconds."""
    if starts:
        ranked = sorted(start.seconds for start in starts)
        start = ranked[math.ceil(PERCENTILE * len(ranked)) - 1]
    else:
        start = DEFAULT_START_SECONDS
    return float(math.ceil(start + poll_seconds))
