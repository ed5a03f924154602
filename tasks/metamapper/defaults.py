"""Metamapper's Celery defaults, applied under whichever configuration module is in use.

They make autoscaling safe: a worker may be stopped at any moment (scale-down,
eviction) and no task is lost.

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged when
  its task finishes, so a task interrupted by a lost worker is delivered again.
- ``worker_prefetch_multiplier = 1``: a worker reserves one message per process, so
  work is not hoarded by a worker that is about to go away, and new workers get some.
- ``task_soft_time_limit`` / ``task_time_limit``: no task runs longer than 20 minutes
  (the soft limit lets a run record its failure). Give worker pods a termination
  grace period of at least ``task_time_limit`` so a warm shutdown can finish.
- ``broker_transport_options.visibility_timeout`` (Redis, SQS): an unacknowledged
  message is redelivered after an hour, longer than the longest task plus the spread
  of delayed run starts, so a running task is never delivered twice. With RabbitMQ
  the server's ``consumer_timeout`` (30 minutes by default) plays that part; raise
  it if you raise the time limits.

Settings prefixed ``metamapper_`` are the revisioner's own.
"""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab
from kombu import Exchange, Queue

from metamapper_beat import DEFAULT_QUEUE, SCHEDULE, TIMEZONE, task_routes

QUEUES = ("default", "checks", "revisioner", "usage")

TASK_TIME_LIMIT = 20 * 60
TASK_SOFT_TIME_LIMIT = TASK_TIME_LIMIT - 60
#: queue_runs spreads run starts over its countdown_in_minutes, 15 by default (upstream's).
RUN_SPREAD_SECONDS = 15 * 60
VISIBILITY_TIMEOUT = 60 * 60

#: Upstream Metamapper 1.0's beat schedule: its nine entries, names and tasks
#: (metamapper_beat.SCHEDULE). Each task is routed by upstream's rules
#: (metamapper_beat.ROUTES), as when upstream's beat sends it.
BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    entry.name: {"task": entry.task, "schedule": crontab(**entry.schedule.fields()),
                 **({"options": {"expires": entry.expires}} if entry.expires else {})}
    for entry in SCHEDULE
}

SETTINGS: dict[str, Any] = {
    "broker_url": "redis://localhost:6379/0",
    "broker_connection_retry_on_startup": True,
    "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    "task_ignore_result": True,
    "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
    "task_default_queue": DEFAULT_QUEUE,
    "task_routes": task_routes(),
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "worker_cancel_long_running_tasks_on_connection_loss": True,
    "task_time_limit": TASK_TIME_LIMIT,
    "task_soft_time_limit": TASK_SOFT_TIME_LIMIT,
    "timezone": TIMEZONE,
    "beat_schedule": BEAT_SCHEDULE,
    # metamapper.beat.RedisScheduler keeps the schedule's state in Redis instead.
    "beat_scheduler": "metamapper.beat:FileScheduler",
    # Seconds between the worker's liveness stamps (metamapper.bootsteps).
    "metamapper_probe_interval": 10,
    # Retries of an unreachable datastore: exponential backoff from the base delay.
    "metamapper_inspect_max_retries": 5,
    "metamapper_inspect_retry_delay_seconds": 30,
    "metamapper_inspect_retry_max_delay_seconds": 10 * 60,
    # Retries of a message naming a row not committed yet (metamapper.uncommitted):
    # doubling from the base delay, 31 s in all.
    "metamapper_unknown_id_max_retries": 5,
    "metamapper_unknown_id_retry_delay_seconds": 1,
}
