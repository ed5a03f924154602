"""Queue-depth probes: one per broker type behind one interface (:class:`Probe`).

``probe_for(access).measure(queues)`` returns a :class:`QueueDepth` per queue, with a
cost per call of one pipelined round trip on Redis, two HTTP requests on the RabbitMQ
management API, one passive declare per queue over AMQP and one GetQueueAttributes per
queue on SQS. A queue the broker cannot measure is left out and named, with the reason,
in the probe's ``failed``; the others are measured all the same.
"""

from __future__ import annotations

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, Probe, ProbeError, QueueDepth
from metamapper_operator.brokers.rabbitmq import AmqpProbe, ManagementProbe
from metamapper_operator.brokers.redis import RedisProbe
from metamapper_operator.brokers.sqs import SqsProbe
from metamapper_operator.references import BrokerAccess

__all__ = ["Probe", "ProbeError", "QueueDepth", "probe_for"]


def probe_for(access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT) -> Probe:
    """The probe for ``access``'s broker; it connects on its first ``measure()``."""
    if access.transport == "redis":
        return RedisProbe(access, timeout=timeout)
    if access.transport == "rabbitmq":
        if access.management_url:
            return ManagementProbe(access, timeout=timeout)
        return AmqpProbe(access, timeout=timeout)
    if access.transport == "sqs":
        return SqsProbe(access, timeout=timeout)
    raise ValueError(f"no queue-depth probe for transport {access.transport!r}")
