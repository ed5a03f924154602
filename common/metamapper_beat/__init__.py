"""Metamapper's beat as data: its default schedule, the routes that take each task to a
queue, and how settings are laid over the defaults (pure, standard library only).

The worker builds Celery's ``beat_schedule`` and ``task_routes`` from these tables; the
operator reads the same tables to know when a fleet's own beat sends work to which queue,
and so which pool to warm before the work arrives. Neither may import the other, so the
tables live here, in the package both images install, and nowhere else.

- :data:`SCHEDULE`: upstream Metamapper 1.0's nine beat entries (names, tasks, crontabs);
- :meth:`Crontab.refusal`: why Celery's ``crontab`` would refuse a crontab's fields (the
  worker builds every entry's schedule when it starts, so one it refuses stops every pod);
- :data:`ROUTES`, :data:`DEFAULT_QUEUE`: upstream's routes;
- :func:`task_routes`: the routes as Celery's ``task_routes`` setting;
- :func:`merge`: how ``METAMAPPER_CELERY_SETTINGS`` (a Metamapper's ``celery.settings``)
  is laid over the defaults: objects key by key, a key set to :data:`REMOVE` (or ``None``)
  removes it; :func:`with_nulls` spells each :data:`REMOVE` as ``None``;
- :func:`route`: the queue Celery's ``task_routes`` mapping gives a task name;
- :data:`METASTORE_ENV`, :data:`NEEDS_METASTORE`: with none of those variables set there is
  no metastore, and beat leaves out the entries whose task needs one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from fnmatch import fnmatchcase
from typing import Any

#: Celery's ``timezone`` in the worker's defaults: crontabs are read on this clock.
TIMEZONE = "UTC"
DEFAULT_QUEUE = "default"

#: The values Celery's ``crontab`` accepts in each field (lowest, highest).
FIELD_RANGES: dict[str, tuple[int, int]] = {
    "minute": (0, 59), "hour": (0, 23), "day_of_week": (0, 6), "day_of_month": (1, 31),
    "month_of_year": (1, 12),
}
#: The names Celery's crontab reads in any field (by their first three letters): months
#: first, then days of the week.
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

#: Upstream's ``task_routes``, in its order: (glob on the task name, queue).
ROUTES: tuple[tuple[str, str], ...] = (
    ("app.checks.tasks.*", "checks"),
    ("app.revisioner.tasks.*", "revisioner"),
    ("app.definitions.tasks.usage.*", "usage"),
)


@dataclass(frozen=True, slots=True)
class Crontab:
    """Celery's ``crontab`` fields (each ``*`` unless given)."""

    minute: str = "*"
    hour: str = "*"
    day_of_week: str = "*"
    day_of_month: str = "*"
    month_of_year: str = "*"

    @classmethod
    def from_string(cls, text: str) -> Crontab:
        """A cron expression's five fields, split on single spaces as Celery's
        ``crontab.from_string`` splits them (minute hour day-of-month month day-of-week)."""
        fields = text.split(" ")
        if len(fields) != 5:
            raise ValueError(f"{text!r} is not five fields separated by single spaces "
                             "(minute hour day-of-month month day-of-week)")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    @property
    def cron(self) -> str:
        """The same times as a cron expression."""
        return " ".join((self.minute, self.hour, self.day_of_month, self.month_of_year,
                         self.day_of_week))

    def fields(self) -> dict[str, str]:
        """Keyword arguments for Celery's ``crontab``."""
        return asdict(self)

    def refusal(self) -> str | None:
        """Why Celery's ``crontab`` refuses these fields; None when it accepts them.

        Celery reads each field as parts separated by commas, each ``*``, ``*/step``, a
        value, ``value-value`` or ``value-value/step``; a value is a whole number within
        the field's range (:data:`FIELD_RANGES`) or a month's or a day's name. Cron's
        other forms (``L``, ``W``, ``#``, ``?``, a step after a single value) and values
        out of range (a day of the week 7, say) it refuses: not one worker would start.
        """
        for name in (f.name for f in fields(self)):
            low, high = FIELD_RANGES[name]
            why = _field_refusal(getattr(self, name), low, high)
            if why is not None:
                return (f"{self.cron!r} is not a crontab Celery accepts: its "
                        f"{name.replace('_', ' ')} {getattr(self, name)!r} {why}")
        return None


def _field_refusal(text: str, low: int, high: int) -> str | None:
    """What Celery's ``crontab_parser`` refuses in one field (its patterns, matched at the
    start of each part as it matches them), or None."""
    for part in text.split(","):
        if (found := _RANGE_STEPS.match(part)) is not None:
            values, step = found.group(1, 2), found.group(3)
        elif (found := _RANGE.match(part)) is not None:
            values, step = found.group(1, 2), None
        elif (found := _STAR_STEPS.match(part)) is not None:
            values, step = (), found.group(1)
        elif part == "*":
            continue
        else:
            values, step = (part,), None
        if found is not None and found.re is not _RANGE and not (
                step and (number := _number(step)) is not None and number > 0):
            return f"has a step {step or ''!r} that is not a positive whole number"
        for value in values:
            number = _value(value)
            if number is None:
                return f"holds {value!r}, neither a number nor a month's or a day's name"
            if not low <= number <= high:
                return f"holds {number}, outside {low}-{high}"
    return None


#: Celery's crontab patterns: a range with a step, a range, ``*`` with a step.
_RANGE_STEPS = re.compile(r"(\w+?)-(\w+)/(\w+)?")
_RANGE = re.compile(r"(\w+?)-(\w+)")
_STAR_STEPS = re.compile(r"\*/(\w+)?")


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _value(text: str) -> int | None:
    """A crontab value as Celery reads it: a whole number, else a month's name (1-12),
    else a day's (0-6), by its first three letters."""
    if not text or text.startswith("-"):
        return None
    if (number := _number(text)) is not None:
        return number
    name = text[:3].lower()
    if name in MONTHS:
        return MONTHS.index(name) + 1
    if name in DAYS:
        return DAYS.index(name)
    return None


@dataclass(frozen=True, slots=True)
class Entry:
    """One beat entry: its name, the task it sends, when, and the message's expiry
    (seconds after sending, None: never)."""

    name: str
    task: str
    schedule: Crontab
    expires: int | None = None


SCHEDULE: tuple[Entry, ...] = (
    # A tick nobody ran within its minute is stale: dropped rather than piled up.
    Entry("beat-scheduler-healthcheck", "app.healthchecks.tasks.heartbeat", Crontab(),
          expires=55),
    Entry("create-revisioner-runs", "app.revisioner.tasks.v1.scheduler.create_runs",
          Crontab(minute="0")),
    Entry("queue-revisioner-runs", "app.revisioner.tasks.v1.scheduler.queue_runs",
          Crontab(minute="15,45")),
    Entry("detect-revisioner-run-timeouts",
          "app.revisioner.tasks.v1.scheduler.detect_run_timeouts", Crontab(minute="0")),
    Entry("create-check-executions", "app.checks.tasks.scheduler.create_executions",
          Crontab()),
    Entry("queue-table-usage-jobs", "app.definitions.tasks.usage.queue_table_usage_jobs",
          Crontab()),
    # Upstream writes crontab(hour="*/12"), which leaves the minute at "*": it fires every
    # minute of hours 0 and 12 (120 purges a day). The intent is twice a day.
    Entry("delete-90-day-table-usage",
          "app.definitions.tasks.usage.delete_table_usage_older_than_90_days",
          Crontab(minute="0", hour="*/12")),
    Entry("queue-domain-verification", "app.sso.tasks.queue_domain_verifications",
          Crontab(minute="*/20")),
    Entry("deleted-domain-failures", "app.sso.tasks.delete_failed_domains",
          Crontab(minute="0", hour="*/4")),
)


#: The web app's database settings (environment variable -> its default): any one set names
#: Metamapper's metastore, the unset ones take these defaults.
METASTORE_ENV: dict[str, str] = {
    "METAMAPPER_DB_HOST": "database",
    "METAMAPPER_DB_PORT": "5432",
    "METAMAPPER_DB_NAME": "metamapper",
    "METAMAPPER_DB_USER": "postgres",
    "METAMAPPER_DB_PASSWORD": "postgres",
}

#: Tasks of beat's schedule that read or write the metastore and have no use without one,
#: left out of beat's schedule when none of :data:`METASTORE_ENV` is set.
#: (``app.healthchecks.tasks.heartbeat`` is not among them: it counts the tick first.)
NEEDS_METASTORE = frozenset({
    "app.revisioner.tasks.v1.scheduler.create_runs",
    "app.revisioner.tasks.v1.scheduler.queue_runs",
    "app.revisioner.tasks.v1.scheduler.detect_run_timeouts",
    "app.checks.tasks.scheduler.create_executions",
    "app.definitions.tasks.usage.queue_table_usage_jobs",
    "app.definitions.tasks.usage.delete_table_usage_older_than_90_days",
    "app.sso.tasks.queue_domain_verifications",
    "app.sso.tasks.delete_failed_domains",
})


def task_routes() -> dict[str, dict[str, str]]:
    """Upstream's routes as Celery's ``task_routes`` setting (a mapping, in order)."""
    return {glob: {"queue": queue} for glob, queue in ROUTES}


#: A key's value that removes the key from the defaults the settings are merged over. A
#: ``null`` does too, but it does not survive every way of writing a Metamapper: client-side
#: ``kubectl apply`` leaves nulls out of the object it creates and sends them as "delete this
#: field" in the merge patch of an update, so the stored object never holds them (so does a
#: Helm upgrade without server-side apply). A string is stored as written, whatever the way.
REMOVE = "$remove"


def removes(value: Any) -> bool:
    """Whether a key set to ``value`` is removed by :func:`merge`."""
    return value is None or (isinstance(value, str) and value == REMOVE)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: objects key by key at any depth; a key whose
    value :func:`removes` is absent from the result (whether or not ``base`` has it)."""
    merged = dict(base)
    for key, value in override.items():
        if removes(value):
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def with_nulls(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with each key set to :data:`REMOVE`, at any depth of objects, set to
    ``None`` instead: the same removals, in the one spelling every reader knows."""
    return {key: None if removes(value)
            else with_nulls(value) if isinstance(value, Mapping) else value
            for key, value in settings.items()}


def route(routes: Mapping[str, Any], name: str, default: str) -> str:
    """The queue a ``task_routes`` mapping sends task ``name`` to, as Celery's
    ``MapRoute`` reads one: an exact name first, then the keys holding ``*`` as globs in
    their order; a route is a queue name or an object with ``queue``. ``default`` when no
    key matches or the route names no queue. ``ValueError`` for a route of another shape.
    """
    found = routes.get(name) if "*" not in name else None
    if found is None:
        found = next((value for key, value in routes.items()
                      if "*" in key and fnmatchcase(name, key)), None)
    if found is None:
        return default
    if isinstance(found, str):
        return found
    if isinstance(found, Mapping):
        queue = found.get("queue", default)
        if isinstance(queue, str):
            return queue
    raise ValueError(f"the route of {name} is neither a queue name nor an object naming one")
