"""Queue depth on Redis, read the way Celery's Redis transport (kombu) stores queues.

kombu keeps a queue as Redis lists: the queue's own key for the lowest priority step and
``<queue>\\x06\\x16<step>`` for each other step of ``priority_steps`` (default
0, 3, 6, 9). A delivered message that is not yet acknowledged leaves the lists and
waits in the hash ``unacked`` (tag -> JSON ``[message, exchange, routing_key]``) until
the worker acknowledges it. Every key carries the transport's ``global_keyprefix``.

One ``measure()`` is one pipelined round trip (a MULTI/EXEC transaction, so the lists
and the hash are read at one instant): an LLEN per list key of every queue, and an
HVALS of the ``unacked`` hash.

In flight is attributed to a queue by the routing key of the delivered message. That
is exact for Celery's routing (each queue bound to a direct exchange with its own name
as routing key); a message routed with a different routing key, through a topic or
fanout exchange, is not counted. The hash also keeps the messages of a worker that
died without acknowledging them until another worker restores them (after the
transport's ``visibility_timeout``); until then they count as in flight.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Collection, Sequence

import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, QueueDepth, probe_error
from metamapper_operator.references import BrokerAccess

#: kombu's defaults (``kombu.transport.redis.Channel``).
SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
UNACKED_KEY = "unacked"


def list_keys(queue: str, priority_steps: Sequence[int] = PRIORITY_STEPS,
              sep: str = SEP) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages (before the key prefix)."""
    return [f"{queue}{sep}{step}" if step else queue for step in priority_steps]


def routing_keys(unacked: Sequence[bytes]) -> Counter[str]:
    """How many unacknowledged messages each routing key has (unreadable entries skipped)."""
    counts: Counter[str] = Counter()
    for raw in unacked:
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        if isinstance(routing_key, str):
            counts[routing_key] += 1
    return counts


class RedisProbe:
    """LLEN of every priority list and the ``unacked`` hash, in one pipeline."""

    source = "redis: LLEN + priority keys + unacked"

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT,
                 priority_steps: Sequence[int] = PRIORITY_STEPS, sep: str = SEP) -> None:
        self.round_trips = 0
        self._access, self._timeout = access, timeout
        self._priority_steps, self._sep = tuple(priority_steps), sep
        # No retries: a failed measurement is reported at once, the next one reconnects.
        self._client = redis.asyncio.Redis.from_url(
            access.url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        prefix = self._access.key_prefix
        names = list(dict.fromkeys(queues))
        keys = [[prefix + key for key in list_keys(queue, self._priority_steps, self._sep)]
                for queue in names]
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=True) as pipe:
                    for key in (key for group in keys for key in group):
                        pipe.llen(key)
                    pipe.hvals(prefix + UNACKED_KEY)
                    self.round_trips += 1
                    replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as err:
            await self._client.connection_pool.disconnect()
            raise probe_error(self._access, f"redis {self._access.display}", err) from None
        in_flight = routing_keys(replies[-1])
        lengths = iter(replies[:-1])
        return {queue: QueueDepth(waiting=sum(next(lengths) for _ in group),
                                  in_flight=in_flight[queue])
                for queue, group in zip(names, keys, strict=True)}

    async def close(self) -> None:
        await self._client.aclose()
