"""Queue depth on Redis, read the way Celery's Redis transport (kombu) stores queues.

kombu keeps a queue as Redis lists: the queue's own key for the lowest priority step and
``<queue><sep><step>`` for each other step of ``priority_steps`` (by default ``\\x06\\x16``
and 0, 3, 6, 9). A delivered message that is not yet acknowledged leaves the lists and
waits in the hash ``unacked`` (tag -> JSON ``[message, exchange, routing_key]``), with its
delivery time in the sorted set ``unacked_index``, until the worker acknowledges it.
Every key carries the transport's ``global_keyprefix``. All of these follow the fleet's
own transport options (:class:`~metamapper_operator.references.RedisLayout`).

One ``measure()`` is one pipelined round trip (a MULTI/EXEC transaction, so the lists
and the hash are read at one instant): an LLEN per list key of every queue, a small Lua
script per queue that reads the publication time of its oldest message (the
``published_at`` header the worker app adds; Redis itself keeps no enqueue time), and one
Lua script that counts the unacknowledged messages per routing key on the server. That
script loads only the entries the probe has not seen before and takes their routing key
from their last bytes (:mod:`~metamapper_operator.brokers.redis_unacked`), so neither the
bytes moved nor the server's work per poll grows with message size
(``bench/probe_in_flight.py``).

In flight is attributed to a queue by the routing key of the delivered message. That
is exact for Celery's routing (each queue bound to a direct exchange with its own name
as routing key); a message routed with a different routing key, through a topic or
fanout exchange, is not counted. An entry delivered longer ago than the layout's
``in_flight_max_age`` (the task time limit) belongs to a worker that died without
acknowledging it; it is reported as stale, not counted in flight, until the transport
restores it after its visibility timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Any

import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, QueueDepth, probe_error
from metamapper_operator.brokers.redis_unacked import (
    COUNT_UNACKED,
    KnownTags,
    Unacked,
    parse_reply,
)
from metamapper_operator.references import BrokerAccess, RedisLayout

# The oldest waiting message of one queue: KEYS = its priority lists. kombu pushes on the
# left and takes from the right, so each list's oldest message is its last element. The
# publication time is the ``published_at`` header that the worker app adds to every task
# it sends (metamapper.metrics); the script returns the earliest one as a string, an
# empty string when every list is empty, and false when a message lacks the header.
# Only the number leaves the server, whatever the message size.
OLDEST_PUBLISHED = """
local oldest = nil
local found = false
for _, key in ipairs(KEYS) do
  local raw = redis.call('LINDEX', key, -1)
  if raw then
    found = true
    local stamp = tonumber(string.match(raw, '"published_at":%s*([-+.%deE]+)'))
    if not stamp then return false end
    if not oldest or stamp < oldest then oldest = stamp end
  end
end
if not found then return '' end
return tostring(oldest)
"""

def oldest_age(reply: Any, now: float) -> float | None:
    """The script's reply as an age in seconds: 0 for empty lists, None when unknown."""
    if reply is None or reply is False:
        return None
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return 0.0 if text == "" else max(0.0, now - float(text))


def list_keys(queue: str, layout: RedisLayout) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages (prefix included)."""
    return [layout.key_prefix + (f"{queue}{layout.sep}{step}" if step else queue)
            for step in layout.priority_steps]


class RedisProbe:
    """LLEN of every priority list and the unacknowledged counts, in one pipeline."""

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.round_trips = 0
        #: Unacknowledged entries loaded so far (each one once, while it is remembered).
        self.entries_read = 0
        self.known_tags = KnownTags()
        self.unconsumed: tuple[str, ...] | None = None  # cannot tell
        self._access, self._timeout, self._clock = access, timeout, clock
        self.source = ("redis: LLEN + priority keys + unacked (older than "
                       f"{access.redis.in_flight_max_age:g} s not counted)")
        # No retries: a failed measurement is reported at once, the next one reconnects.
        self._client = redis.asyncio.Redis.from_url(
            access.url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        layout = self._access.redis
        names = list(dict.fromkeys(queues))
        keys = [list_keys(queue, layout) for queue in names]
        cutoff = self._clock() - layout.in_flight_max_age
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=True) as pipe:
                    for key in (key for group in keys for key in group):
                        pipe.llen(key)
                    for group in keys:
                        pipe.execute_command("EVAL", OLDEST_PUBLISHED, len(group), *group)
                    # EVAL, not EVALSHA: a pipeline would check the script cache first.
                    pipe.execute_command(
                        "EVAL", COUNT_UNACKED, 2, layout.key_prefix + layout.unacked_key,
                        layout.key_prefix + layout.unacked_index_key, repr(cutoff),
                        *self.known_tags.arguments())
                    self.round_trips += 1
                    replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as err:
            await self._client.connection_pool.disconnect()
            raise probe_error(self._access, f"redis {self._access.display}", err) from None
        now = self._clock()
        reply = parse_reply(replies[-1])
        self.known_tags.update(reply)
        self.entries_read += len(reply.learned)
        unacked = reply.counts
        lengths = iter(replies[:-1])
        ages = replies[-1 - len(keys):-1]
        none = Unacked(0, 0)
        return {queue: QueueDepth(waiting=sum(next(lengths) for _ in group),
                                  in_flight=unacked.get(queue, none).in_flight,
                                  stale=unacked.get(queue, none).stale,
                                  oldest_age=oldest_age(age, now))
                for queue, group, age in zip(names, keys, ages, strict=True)}

    async def close(self) -> None:
        await self._client.aclose()
