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
Lua script that counts the unacknowledged messages per routing key on the server, from
the last bytes of each entry, so neither the bytes moved nor the script's work per entry
grows with message size (``bench/probe_in_flight.py``).

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
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, QueueDepth, probe_error
from metamapper_operator.references import BrokerAccess, RedisLayout

# Counts of unacknowledged messages per routing key: KEYS = unacked hash, unacked_index
# sorted set; ARGV[1] = the oldest delivery time still counted in flight. An entry is the
# JSON [message, exchange, routing key]: the routing key is its last string, found from
# the end with plain searches over the reversed last bytes (a pattern anchored at the
# end would be tried from every position), so the work per entry does not grow with the
# message. Returns [routing key, in flight, stale, ...].
COUNT_UNACKED = """
local counts = {}
local cutoff = tonumber(ARGV[1])
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local raw = redis.call('HGET', KEYS[1], entries[i])
  if raw then
    local tail = string.reverse(string.sub(raw, -256))
    local close = string.find(tail, '"', 1, true)
    local open = close and string.find(tail, '"', close + 1, true)
    if open and string.find(string.sub(tail, 1, close - 1), '^%s*%]%s*$') then
      local key = string.reverse(string.sub(tail, close + 1, open - 1))
      local count = counts[key] or {0, 0}
      if tonumber(entries[i + 1]) >= cutoff then count[1] = count[1] + 1
      else count[2] = count[2] + 1 end
      counts[key] = count
    end
  end
end
local out = {}
for key, count in pairs(counts) do
  out[#out + 1] = key
  out[#out + 1] = count[1]
  out[#out + 1] = count[2]
end
return out
"""

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


@dataclass(frozen=True)
class Unacked:
    in_flight: int
    stale: int


def unacked_counts(reply: Sequence[Any]) -> dict[str, Unacked]:
    """The script's flat reply, by routing key."""
    return {(key.decode() if isinstance(key, bytes) else str(key)): Unacked(int(fresh),
                                                                            int(stale))
            for key, fresh, stale in zip(reply[::3], reply[1::3], reply[2::3], strict=True)}


class RedisProbe:
    """LLEN of every priority list and the unacknowledged counts, in one pipeline."""

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.round_trips = 0
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
                        layout.key_prefix + layout.unacked_index_key, repr(cutoff))
                    self.round_trips += 1
                    replies = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as err:
            await self._client.connection_pool.disconnect()
            raise probe_error(self._access, f"redis {self._access.display}", err) from None
        now = self._clock()
        unacked = unacked_counts(replies[-1])
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
