"""Queue depth on Redis, read the way Celery's Redis transport (kombu) stores queues.

kombu keeps a queue as Redis lists: the queue's own key for the lowest priority step and
``<queue><sep><step>`` for each other step of ``priority_steps`` (by default ``\\x06\\x16``
and 0, 3, 6, 9). A delivered message that is not yet acknowledged leaves the lists and
waits in the hash ``unacked`` (tag -> JSON ``[message, exchange, routing_key]``), with its
delivery time in the sorted set ``unacked_index``, until the worker acknowledges it.
Every key carries the transport's ``global_keyprefix``. All of these follow the fleet's
own transport options (:class:`~metamapper_operator.references.RedisLayout`).

One ``measure()`` is one pipelined round trip (a MULTI/EXEC transaction, so the lists
and the hash are read at one instant) of two Lua scripts. The first reads every queue:
the length of each of its lists and the publication time of its oldest message (the
``published_at`` header the worker app adds; Redis itself keeps no enqueue time). A queue
whose key holds another type (a queue named like kombu's own ``unacked`` hash, say) is
reported in ``failed`` with the key and its type; the other queues are measured all the
same (``bench/probe_queues.py`` gives the cost per queue). The second script counts the
unacknowledged messages per routing key on the server; if kombu's unacknowledged keys
hold another type, in flight is unknown (None) for every queue and the waiting counts
still stand. That script loads only the entries the probe has not seen before and takes
their routing key from their last bytes (:mod:`~metamapper_operator.brokers.redis_unacked`),
so neither the bytes moved nor the server's work per poll grows with message size
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

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, QueueDepth, probe_error, scrubbed
from metamapper_operator.brokers.redis_unacked import (
    COUNT_UNACKED,
    KnownTags,
    Unacked,
    parse_reply,
)
from metamapper_operator.references import BrokerAccess, RedisLayout

# Every queue's waiting messages: KEYS = the priority lists of every queue, ARGV[1] lists
# per queue. Returns two values per queue: the messages waiting and the publication time
# of the oldest, the ``published_at`` header that the worker app adds to every task it
# sends (metamapper.metrics), as a string (an empty string when every list is empty,
# false when a list's oldest message lacks the header). kombu pushes on the left and
# takes from the right, so each list's oldest message is its last element. Only numbers
# leave the server, whatever the message size. A key of another type fails its queue
# alone: false, then "<the key's index among the queue's lists> <its type>".
QUEUE_DEPTHS = """
local per = tonumber(ARGV[1])
local out = {}
for first = 1, #KEYS, per do
  local waiting, oldest, unknown, wrong = 0, nil, false, nil
  for i = first, first + per - 1 do
    local length = redis.pcall('LLEN', KEYS[i])
    if type(length) == 'table' then
      wrong = (i - first + 1) .. ' ' .. redis.call('TYPE', KEYS[i])['ok']
      break
    end
    if length > 0 then
      waiting = waiting + length
      local raw = redis.call('LINDEX', KEYS[i], -1)
      local stamp = tonumber(string.match(raw, '"published_at":%s*([-+.%deE]+)'))
      if not stamp then unknown = true
      elseif not oldest or stamp < oldest then oldest = stamp end
    end
  end
  if wrong then
    out[#out + 1] = false
    out[#out + 1] = wrong
  else
    out[#out + 1] = waiting
    out[#out + 1] = (not unknown) and (oldest and tostring(oldest) or '')
  end
end
return out
"""


def wrong_type(reply: bytes, keys: list[str]) -> str:
    """Why :data:`QUEUE_DEPTHS` failed a queue: its key of another type."""
    index, kind = reply.decode().split(" ", 1)
    return f"WRONGTYPE: key {keys[int(index) - 1]!r} holds a {kind}, not a list"


def oldest_age(reply: Any, now: float) -> float | None:
    """The script's time as an age in seconds: 0 for empty lists, None when unknown."""
    if reply is None or reply is False:
        return None
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return 0.0 if text == "" else max(0.0, now - float(text))


def list_keys(queue: str, layout: RedisLayout) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages (prefix included)."""
    return [layout.key_prefix + (f"{queue}{layout.sep}{step}" if step else queue)
            for step in layout.priority_steps]


class RedisProbe:
    """The length of every priority list and the unacknowledged counts, in one
    transaction."""

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.round_trips = 0
        #: Unacknowledged entries loaded so far (each one once, while it is remembered).
        self.entries_read = 0
        self.known_tags = KnownTags()
        self.unconsumed: tuple[str, ...] | None = None  # cannot tell
        self.failed: dict[str, str] = {}
        self._access, self._timeout, self._clock = access, timeout, clock
        self.source = ("redis: LLEN + priority keys + unacked (older than "
                       f"{access.redis.in_flight_max_age:g} s not counted)")
        # No retries: a failed measurement is reported at once, the next one reconnects.
        self._client = redis.asyncio.Redis.from_url(
            access.url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        self.failed = {}
        layout = self._access.redis
        names = list(dict.fromkeys(queues))
        keys = [list_keys(queue, layout) for queue in names]
        cutoff = self._clock() - layout.in_flight_max_age
        try:
            async with asyncio.timeout(self._timeout):
                async with self._client.pipeline(transaction=True) as pipe:
                    # EVAL, not EVALSHA: a pipeline would check the script cache first.
                    pipe.execute_command(
                        "EVAL", QUEUE_DEPTHS, len(names) * len(layout.priority_steps),
                        *(key for group in keys for key in group),
                        len(layout.priority_steps))
                    pipe.execute_command(
                        "EVAL", COUNT_UNACKED, 2, layout.key_prefix + layout.unacked_key,
                        layout.key_prefix + layout.unacked_index_key, repr(cutoff),
                        *self.known_tags.arguments())
                    self.round_trips += 1
                    # Inside MULTI/EXEC an error fails its own command, not the other.
                    waiting, unacked_reply = await pipe.execute(raise_on_error=False)
            if isinstance(waiting, RedisError):
                raise waiting
        except (RedisError, OSError, TimeoutError) as err:
            await self._client.connection_pool.disconnect()
            raise probe_error(self._access, f"redis {self._access.display}", err) from None
        now = self._clock()
        unacked = self._unacked(unacked_reply)
        depths = {}
        for queue, group, count, oldest in zip(names, keys, waiting[::2], waiting[1::2],
                                               strict=True):
            if count is None:
                self.failed[queue] = scrubbed(self._access, wrong_type(oldest, group))
                continue
            counts = None if unacked is None else unacked.get(queue, Unacked(0, 0))
            depths[queue] = QueueDepth(
                waiting=int(count), in_flight=None if counts is None else counts.in_flight,
                stale=0 if counts is None else counts.stale, oldest_age=oldest_age(oldest, now))
        return depths

    def _unacked(self, reply: Any) -> dict[str, Unacked] | None:
        """The unacknowledged counts per routing key; None when kombu's unacked keys
        cannot be read (a key of another type there: in flight is then unknown)."""
        if isinstance(reply, RedisError):
            return None
        parsed = parse_reply(reply)
        self.known_tags.update(parsed)
        self.entries_read += len(parsed.learned)
        return parsed.counts

    async def close(self) -> None:
        await self._client.aclose()
