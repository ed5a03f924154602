"""Celery settings from the environment, for the default configuration module.

- ``METAMAPPER_CELERY_BROKER_URL``: the broker (``redis://``, ``amqp://``, ``sqs://``),
  Metamapper's own name for it; ``METAMAPPER_BROKER_URL`` is an alias, used only when the
  former is unset or empty.
- ``METAMAPPER_CELERY_RESULT_BACKEND``: a result backend, if any (the revisioner's chord
  needs one in upstream Metamapper); alias ``METAMAPPER_RESULT_BACKEND``, likewise.
- ``METAMAPPER_BEAT_REDIS_URL``: the Redis of :class:`metamapper.beat.RedisScheduler`
  (``redbeat_redis_url``), kept out of the settings because it may carry a password.
- ``METAMAPPER_CELERY_SETTINGS``: a JSON object of Celery settings (lowercase names)
  merged over the defaults: nested objects merge key by key (so
  ``{"broker_transport_options": {"global_keyprefix": "mm:"}}`` keeps the visibility
  timeout), a key set to ``"$remove"`` (:data:`metamapper_beat.REMOVE`) or ``null`` is
  removed (``{"beat_schedule": {"beat-scheduler-healthcheck": "$remove"}}``: beat sends no
  heartbeat), and in ``beat_schedule`` a string schedule is a crontab expression
  (``"*/5 * * * *"``), a number is seconds. The operator renders a Metamapper's
  ``celery.settings`` into this variable with each ``"$remove"`` spelt ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from celery.schedules import crontab

from metamapper.defaults import SETTINGS
from metamapper_beat import merge

# Metamapper's names first: the first one set (and not empty) wins.
BROKER_URL_ENV = ("METAMAPPER_CELERY_BROKER_URL", "METAMAPPER_BROKER_URL")
BEAT_REDIS_URL_ENV = "METAMAPPER_BEAT_REDIS_URL"
RESULT_BACKEND_ENV = ("METAMAPPER_CELERY_RESULT_BACKEND", "METAMAPPER_RESULT_BACKEND")
CELERY_SETTINGS_ENV = "METAMAPPER_CELERY_SETTINGS"


def first_set(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    """The value of the first of ``names`` that is set and not empty."""
    return next((environ[name] for name in names if environ.get(name)), None)


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    settings = dict(SETTINGS)
    broker_url = first_set(environ, BROKER_URL_ENV)
    if broker_url:
        settings["broker_url"] = broker_url
    result_backend = first_set(environ, RESULT_BACKEND_ENV)
    if result_backend:
        settings["result_backend"] = result_backend
        settings["task_ignore_result"] = False
    if environ.get(BEAT_REDIS_URL_ENV):
        settings["redbeat_redis_url"] = environ[BEAT_REDIS_URL_ENV]
    raw = environ.get(CELERY_SETTINGS_ENV, "").strip()
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{CELERY_SETTINGS_ENV} is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise ValueError(f"{CELERY_SETTINGS_ENV} must be a JSON object")
        settings = merge(settings, extra)
    settings["beat_schedule"] = {
        name: {**entry, "schedule": _schedule(entry["schedule"])}
        for name, entry in settings.get("beat_schedule", {}).items()
    }
    return settings


def _schedule(value: Any) -> Any:
    if isinstance(value, str):
        return crontab.from_string(value)
    return value
