"""Graceful scale-down: make the ReplicaSet controller remove idle workers first.

Before a pool shrinks, each of its pods gets a ``controller.kubernetes.io/pod-deletion-cost``
from the number of tasks its Celery worker is running (asked with ``celery inspect
active``, addressed to the pool's workers by their ``<pool>@<pod>`` hostnames): idle
workers the lowest cost, busy ones a cost that grows with their work. The real
ReplicaSet controller then deletes the cheapest pods; those get SIGTERM, Celery's warm
shutdown finishes what they run within the grace period, and late acks requeue anything
that could not finish. Brokers without broadcast (SQS) cannot be asked: the pods are left
as they are and the controller picks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from metamapper_operator.references import BrokerAccess

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
IDLE_COST = -1000
BUSY_COST_PER_TASK = 1000
INSPECT_TIMEOUT = 1.0
log = logging.getLogger(__name__)


def deletion_costs(pods: Sequence[str], active: Mapping[str, int]) -> dict[str, int]:
    """Cost per pod: idle (or silent) workers lowest, the busiest highest."""
    return {pod: BUSY_COST_PER_TASK * active[pod] if active.get(pod) else IDLE_COST
            for pod in pods}


def _inspect_active(access: BrokerAccess, transport_options: Mapping[str, object],
                    hostnames: Sequence[str]) -> dict[str, int] | None:
    from celery import Celery  # the operator needs Celery only here

    app = Celery("metamapper-operator", broker=access.url, set_as_current=False)
    app.conf.broker_transport_options = dict(transport_options)
    app.conf.broker_connection_retry_on_startup = False
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
        replies = await asyncio.to_thread(_inspect_active, access, transport_options, hostnames)
    except Exception as err:  # any broker failure: fall back to the controller's choice
        log.warning("could not ask pool %s which workers are busy: %s", pool,
                    type(err).__name__)
        return None
    if replies is None:
        return None
    return {host.partition("@")[2]: count for host, count in replies.items()}
