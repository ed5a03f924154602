"""Settings that contradict each other or the broker's state: pure rules, each returning a
message for a Warning condition, or None when all is well.

- A message a worker holds unacknowledged (Celery's late acks) is given to another worker
  once the broker's visibility timeout passes (Redis, SQS): a timeout shorter than the
  longest a task may run delivers long tasks twice.
- On RabbitMQ, a queue holding messages that nothing consumes and no pool names is work
  that never runs (a task routed to a queue nobody listed, say).
- A task acknowledged before it ends is lost with its worker: the broker has nothing left
  to deliver again (:func:`early_acks`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metamapper_operator.model import (
    TRANSPORT_OPTIONS,
    WORKER_TASK_TIME_LIMIT,
    WORKER_VISIBILITY_TIMEOUT,
    Fleet,
    transport_options,
)

# kombu's own visibility timeouts, in force when the settings remove the worker image's
# (WORKER_VISIBILITY_TIMEOUT, which applies when they do not set one).
DEFAULT_VISIBILITY_TIMEOUT = {"redis": 3600.0, "sqs": 1800.0}
# Celery's own queues: broadcast replies and events, never a pool's.
CELERY_INTERNAL = (".pidbox", "celeryev.")
# Acknowledgement settings the worker image turns on (tasks/metamapper/defaults.py) and
# Celery leaves off: on unless celery.settings sets them, off once removed.
ACKS_LATE = "task_acks_late"
REJECT_ON_WORKER_LOST = "task_reject_on_worker_lost"


@dataclass(frozen=True, slots=True)
class EarlyAcks:
    """A setting that has the worker acknowledge a task before it ends: the reason of the
    warning condition, and its message."""

    reason: str
    message: str


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def longest_time_limit(settings: Mapping[str, Any]) -> float:
    """The longest a task may run: the hard limit (the worker image's by default), or a
    soft limit set above it."""
    limits = [seconds for seconds in (
        _seconds(settings.get("task_time_limit", WORKER_TASK_TIME_LIMIT)),
        _seconds(settings.get("task_soft_time_limit"))) if seconds is not None]
    return max(limits, default=float(WORKER_TASK_TIME_LIMIT))


def short_visibility_timeout(settings: Mapping[str, Any], transport: str | None) -> str | None:
    """A message when the Redis/SQS visibility timeout is below the longest time limit."""
    if transport not in DEFAULT_VISIBILITY_TIMEOUT:
        return None
    given = settings.get(TRANSPORT_OPTIONS, {})
    removed = given is None or (isinstance(given, Mapping) and "visibility_timeout" in given
                                and given["visibility_timeout"] is None)
    fallback = DEFAULT_VISIBILITY_TIMEOUT[transport] if removed else WORKER_VISIBILITY_TIMEOUT
    timeout = _seconds(transport_options(settings).get("visibility_timeout", fallback))
    limit = longest_time_limit(settings)
    if timeout is None or timeout >= limit:
        return None
    return (f"broker_transport_options.visibility_timeout ({timeout:g} s) is below the "
            f"longest task time limit ({limit:g} s): {transport} gives a task still running "
            "after the timeout to another worker, so it runs twice")


def early_acks(settings: Mapping[str, Any]) -> EarlyAcks | None:
    """The setting that loses a task with its worker, or None when both stay on.

    ``task_acks_late`` off (removed, or set to a value Celery takes as false: ``false``,
    ``0``, an empty string): a worker acknowledges each task as it starts it, so a task
    running on a pod that dies (evicted, killed for memory, its node lost, cut off at the
    end of its grace period; an SQS pool's shrink) is gone, and the not-safe-to-evict marks
    are asked for only while messages wait.

    ``task_reject_on_worker_lost`` off, late acks on: Celery consults it only when a pool
    process dies under a worker that lives on (the kernel's out-of-memory killer choosing a
    child of the prefork pool, a crash in a driver). The worker then acknowledges the task
    as failed instead of handing it back, so it is lost. A whole pod that dies acknowledges
    nothing, and the broker delivers its tasks again either way; what the setting guards
    is a pool process that dies alone, and the promise that no task is lost covers it too.
    """
    if not settings.get(ACKS_LATE, True):
        return EarlyAcks(reason="AckedBeforeRun", message=(
            f"{_spelt(settings, ACKS_LATE)}: a worker acknowledges a task as it starts it, "
            "so a task running on a pod that dies (evicted, killed for memory, cut off at "
            "the end of its grace period) is lost: the broker has nothing to deliver again"))
    if not settings.get(REJECT_ON_WORKER_LOST, True):
        return EarlyAcks(reason="AckedWhenWorkerLost", message=(
            f"{_spelt(settings, REJECT_ON_WORKER_LOST)}: a task whose pool process dies "
            "(killed for memory, crashed) while its worker lives on is acknowledged as "
            "failed, so it is lost instead of delivered again"))
    return None


def _spelt(settings: Mapping[str, Any], key: str) -> str:
    """How the settings turn ``key`` off, in a message's words."""
    if settings[key] is None:
        return f"{key} is removed (Celery's default: off)"
    return f"{key} is {'false' if settings[key] is False else repr(settings[key])}"


def unconsumed_queues(fleet_pools_queues: Iterable[str], unconsumed: Iterable[str]
                      ) -> list[str]:
    """Queues with messages and no consumer that no pool of the broker's fleets names."""
    named = set(fleet_pools_queues)
    return sorted(q for q in unconsumed
                  if q not in named and not q.endswith(CELERY_INTERNAL[0])
                  and not q.startswith(CELERY_INTERNAL[1]))


def queue_without_consumer(queues: list[str]) -> str | None:
    if not queues:
        return None
    return ("messages wait in " + ", ".join(queues) + " with no consumer, and no pool "
            "names the queue: add it to a pool's queues or stop routing tasks to it")


def fleet_queues(fleet: Fleet) -> list[str]:
    return [queue for pool in fleet.pools for queue in pool.queues]
