"""Graceful scale-down: make the ReplicaSet controller remove idle workers first.

Before a pool shrinks, each of its pods gets a ``controller.kubernetes.io/pod-deletion-cost``
from the number of tasks its Celery worker is running (asked with ``celery inspect
active``, addressed to the pool's workers by their ``<pool>@<pod>`` hostnames): idle
workers the lowest cost, busy ones a cost that grows with their work. The real
ReplicaSet controller then deletes the cheapest pods; those get SIGTERM, Celery's warm
shutdown finishes what they run within the grace period, and late acks requeue anything
that could not finish. A worker that does not answer in time is not assumed idle: it
ranks between the idle and the busy ones, and the pool never shrinks below the number of
workers found busy. When the workers cannot be asked at all (SQS has no broadcast; the
broker failed), costs set earlier are removed rather than left stale, and the
controller picks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from metamapper_operator.references import BrokerAccess

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
IDLE_COST = -1000
SILENT_COST = 0
BUSY_COST_PER_TASK = 1000
INSPECT_TIMEOUT = 1.0
# The whole inspection (connecting included) may take this long; past it, nobody answered.
INSPECT_LIMIT = 5.0
log = logging.getLogger(__name__)


def deletion_costs(pods: Sequence[str], active: Mapping[str, int]) -> dict[str, int]:
    """Cost per pod: idle workers lowest, silent ones (no answer: maybe busy) next, the
    busiest highest."""
    def cost(pod: str) -> int:
        if pod not in active:
            return SILENT_COST
        return BUSY_COST_PER_TASK * active[pod] if active[pod] else IDLE_COST
    return {pod: cost(pod) for pod in pods}


def busy(active: Mapping[str, int]) -> int:
    """Workers found running a task: the floor of a scale-down."""
    return sum(1 for count in active.values() if count > 0)


def _inspect_active(access: BrokerAccess, transport_options: Mapping[str, object],
                    hostnames: Sequence[str]) -> dict[str, int] | None:
    from celery import Celery  # the operator needs Celery only here

    app = Celery("metamapper-operator", broker=access.url, set_as_current=False)
    app.conf.broker_transport_options = dict(transport_options)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_timeout = INSPECT_TIMEOUT
    try:
        replies = app.control.inspect(destination=list(hostnames),
                                      timeout=INSPECT_TIMEOUT).active()
    finally:
        app.close()
    if replies is None:
        return {}
    return {host: len(tasks) for host, tasks in replies.items()}


async def active_tasks(access: BrokerAccess, transport_options: Mapping[str, object],
                       pool: str, pods: Sequence[str]) -> dict[str, int] | None:
    """Running tasks per pod (pods that did not answer are missing); None: cannot ask."""
    if access.transport == "sqs" or not pods:
        return None
    hostnames = [f"{pool}@{pod}" for pod in pods]
    try:
        async with asyncio.timeout(INSPECT_LIMIT):
            replies = await asyncio.to_thread(_inspect_active, access, transport_options,
                                              hostnames)
    except Exception as err:  # any broker failure: fall back to the controller's choice
        log.warning("could not ask pool %s which workers are busy: %s", pool,
                    type(err).__name__)
        return None
    if replies is None:
        return None
    return {host.partition("@")[2]: count for host, count in replies.items()}
