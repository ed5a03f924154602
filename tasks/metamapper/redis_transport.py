"""kombu's Redis transport with an atomic take: a message leaves its queue only into ``unacked``.

kombu's own transport (``kombu.transport.redis``) takes a message with ``BRPOP`` and
records it in the ``unacked`` hash (``HSET unacked`` + ``ZADD unacked_index``) only
afterwards, in a second command sent once the reply has reached the worker. A broker
that goes away between the two (a restart, a crash) loses the message: the pop is
persisted, the record never made, and the visibility sweep restores from ``unacked``
only (docs/broker-restarts.md has the evidence). This transport makes "take a message"
and "record it as unacknowledged" one step on the server: a Lua script (:data:`TAKE`)
finds the first message of the first non-empty queue key, in the order kombu's fair
cycle gives, records it in ``unacked`` and ``unacked_index`` exactly as kombu does, and
only then removes it from its list. A reply lost with the connection leaves the message
in ``unacked``, from where the sweep delivers it again after the visibility timeout.

Scripts cannot block, so the wait is a separate, non-destructive step. The worker asks
the server to notify it of every change to its queue keys (``CLIENT TRACKING ... BCAST
PREFIX <queue>``, redirected to a connection of its own subscribed to
``__redis__:invalidate``: Redis 6.0 or later, no server configuration, and it sees every
writer: kombu publishers of any version, the sweep's restores). A tracking prefix
covers every key that starts with it, in every database of the server, so the notice's
key names are read and only a change of one of the consumer's own queue keys wakes it.
An idle worker waits for that connection to become readable, then runs the script. The
connection is only a hint: it is pinged on kombu's health tick (it only receives, so a
middlebox may drop it unseen), and when it fails or is gone on the server it is
connected again and the notices redirected to it, with no error reaching Celery. A
script that finds nothing makes the next one wait for a notice, or for ``brpop_timeout``
(1 s, as long as kombu's own ``BRPOP`` waits), a safety net against a notice missed
while a connection was being made again; so an idle worker costs the server one script
a second, as kombu's ``BRPOP`` costs one timeout a second. The notices are switched on
before the first take on every new connection, so a message pushed while the worker was
not listening is found by that take.

The options weighed (docs/broker-restarts.md has the longer account):

- ``BLMOVE``/``BRPOPLPUSH`` into a per-consumer in-flight list: atomic, blocking, but
  from one source key only, and a worker consumes four queues times four priority keys:
  blocking on one at a time is either polling or unfair. It also needs an in-flight list
  named stably across worker restarts (a pod's name is not: a deleted pod's list would
  be orphaned) and a sweeper of its own, and the list would hold messages that are
  neither backlog nor in ``unacked``, where the operator's probe and kombu's sweep look.
- ``BLMPOP`` (Redis 7): blocks on many keys, but pops like ``BRPOP``; it cannot record.
- Keyspace notifications as the wake-up: need ``notify-keyspace-events`` set on the
  server (a global setting many managed Redis forbid clients to change); client tracking
  needs nothing.
- kombu upstream: an issue open since 2014 (celery/kombu#305), no atomic take.

What is unchanged: the keys (no new one: a taken message is in ``unacked`` as kombu puts
it there, so the operator's queue depth and in-flight counts stay true), the entries
(``[message, exchange, routing_key]`` under the delivery tag kombu gives at publication,
``unacked_index`` scored with the worker's clock), the fair round-robin over queues and
the priority order within them, the visibility sweep, acknowledgement and restore, and
``cancel_consumer``. A cancelled queue's prefix stays tracked until the next take (which
needs credit) or until every queue is cancelled; meanwhile its changes are no reason to
take. A message kombu cannot decode after the take loses its record, as kombu's
transport would never have made one (docs/broker-restarts.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from queue import Empty
from typing import Any
from urllib.parse import urlparse

from kombu import Connection
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger(__name__)

#: The transport the worker uses for ``redis://`` and ``rediss://`` brokers.
TRANSPORT = "metamapper.redis_transport:Transport"
REDIS_SCHEMES = frozenset({"redis", "rediss"})
INVALIDATE = "__redis__:invalidate"

#: Take one message atomically. KEYS[1] the unacked hash, KEYS[2] unacked_index, then the
#: queue keys in the order to try; ARGV[1] the delivery time, ARGV[2] a "1" or "0" per
#: queue key: whether its messages are recorded (a consumer that acknowledges) or not
#: (``no_ack``). Returns {key, message, 1 if recorded}, or nil when every key is empty.
#: The record is written before the list is changed (a script is not rolled back: an
#: error, such as a full server refusing HSET, leaves the message in its queue). The
#: entry keeps the message's own bytes; exchange and routing key are JSON strings (cjson
#: escapes "/", JSON's own parsers do not need it). A message without a delivery tag is
#: taken unrecorded, as kombu's BRPOP takes it.
TAKE = """
local function text(value)
  if type(value) ~= 'string' then return 'null' end
  return (string.gsub(cjson.encode(value), '\\\\/', '/'))
end
for i = 3, #KEYS do
  local raw = redis.call('LINDEX', KEYS[i], -1)
  if raw then
    local recorded = 0
    local ok, message = false, nil
    if string.sub(ARGV[2], i - 2, i - 2) == '1' then ok, message = pcall(cjson.decode, raw) end
    if ok and type(message) == 'table' and type(message.properties) == 'table'
        and type(message.properties.delivery_tag) == 'string' then
      local tag = message.properties.delivery_tag
      local info = message.properties.delivery_info
      if type(info) ~= 'table' then info = {} end
      redis.call('HSET', KEYS[1], tag,
                 '[' .. raw .. ', ' .. text(info.exchange) .. ', ' .. text(info.routing_key) .. ']')
      redis.call('ZADD', KEYS[2], ARGV[1], tag)
      recorded = 1
    end
    redis.call('RPOP', KEYS[i])
    return {KEYS[i], raw, recorded}
  end
end
return nil
"""


def transport_for(url: str | None, configured: str | None) -> str | None:
    """The kombu transport a connection to ``url`` gets: ``configured`` (the
    ``broker_transport`` setting) when set, this module's for a Redis URL, else None
    (kombu's choice by the URL's scheme)."""
    if configured or not url:
        return configured
    first = url.split(";", 1)[0]
    return TRANSPORT if urlparse(first).scheme in REDIS_SCHEMES else None


class BrokerConnection(Connection):
    """kombu's connection, with this module's transport for a Redis URL (see
    :func:`transport_for`), and ``redis`` as its scheme in the URLs it shows (logs)."""

    resolve_aliases = {**Connection.resolve_aliases, TRANSPORT: "redis"}  # noqa: RUF012

    def __init__(self, hostname: Any = "localhost", *args: Any, **kwargs: Any) -> None:
        if isinstance(hostname, str):
            kwargs["transport"] = transport_for(hostname, kwargs.get("transport"))
        super().__init__(hostname, *args, **kwargs)


def tracked_prefixes(key_prefix: str, queues: Iterable[str]) -> tuple[str, ...]:
    """The key prefixes whose changes wake a consumer of ``queues``: each queue's name
    (which also covers its priority keys, ``<queue><sep><step>``), without those another
    one already covers (Redis refuses overlapping prefixes), sorted."""
    kept: list[str] = []
    for prefix in sorted({key_prefix + queue for queue in queues}):
        if not any(prefix.startswith(shorter) for shorter in kept):
            kept.append(prefix)
    return tuple(kept)


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, which does not record again what the take already recorded."""

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel.recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)   # the local bookkeeping only
        else:   # delivered another way (a fanout message): kombu's own record
            super().append(message, delivery_tag)


def invalidated(notice: Any) -> list[str] | None:
    """The keys an invalidation notice names: a subscriber's message on
    ``__redis__:invalidate`` (RESP2) or an ``invalidate`` push (RESP3). None means every
    key: a flush, or a push the parser kept to itself (its contents unknown). Anything
    else read from the doorbell (a PONG, a subscription's confirmation) names no key."""
    if notice is None:
        return None
    if not isinstance(notice, list) or not notice:
        return []
    kind = bytes_to_str(notice[0])
    if kind == "invalidate" and len(notice) == 2:
        keys = notice[1]
    elif kind == "message" and len(notice) == 3 and bytes_to_str(notice[1]) == INVALIDATE:
        keys = notice[2]
    else:
        return []
    return None if keys is None else [bytes_to_str(key) for key in keys]


def _as_read(response: Any) -> Any:
    return response


class Doorbell:
    """The connection the server's notices of changes to the tracked keys come to: a
    subscriber of ``__redis__:invalidate`` (RESP2), or pushes ``invalidate`` (RESP3,
    redis-py's default); both are read as pushes (:func:`invalidated`)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.client_id: int | None = None
        #: Health checks sent since the doorbell last read anything.
        self.unanswered = 0

    def ensure(self) -> bool:
        """Connect and subscribe if not connected; True if it did (a new client id)."""
        if self.connection._sock is not None and self.client_id is not None:
            return False
        self.client_id = None
        self.unanswered = 0
        self.connection.connect()
        parser = self.connection._parser
        if hasattr(parser, "set_invalidation_push_handler"):   # RESP3: return, not drop,
            parser.set_invalidation_push_handler(_as_read)       # the invalidate pushes
        self.connection.send_command("CLIENT", "ID")
        client_id = int(self.connection.read_response())
        self.connection.send_command("SUBSCRIBE", INVALIDATE)
        self.connection.read_response(push_request=True)
        self.client_id = client_id
        return True

    def disconnect(self) -> None:
        self.client_id = None
        self.unanswered = 0
        self.connection.disconnect()


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, taking with :data:`TAKE` and waiting for the doorbell."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: Tags the take recorded in ``unacked``, until :meth:`QoS.append` sees them.
        self.recorded: set[str] = set()
        self._doorbell: Doorbell | None = None
        self._armed: tuple[Any, int, tuple[str, ...]] | None = None
        self._take_due = True
        self._idle_since = 0.0
        #: Queues consumed without acknowledgements: their messages are not recorded.
        self._no_ack: set[str] = set()
        self._get_records = True
        #: Set once the server refused the notices: the channel does without them.
        self.doorbell_refused = False
        super().__init__(*args, **kwargs)

    @property
    def doorbell(self) -> Doorbell:
        if self._doorbell is None:
            self._doorbell = Doorbell(self.async_pool.get_connection())
        return self._doorbell

    def _take_command(self, queues: Iterable[str], no_ack: frozenset[str] = frozenset()
                      ) -> list[Any]:
        """The take from ``queues`` in BRPOP's order (priority steps first, the queues
        within them); messages of the ``no_ack`` ones are not recorded."""
        pairs = [(self.global_keyprefix + self._q_for_pri(queue, pri), queue not in no_ack)
                 for pri in self.priority_steps for queue in queues]
        return ["EVAL", TAKE, 2 + len(pairs), self.global_keyprefix + self.unacked_key,
                self.global_keyprefix + self.unacked_index_key,
                *[key for key, _ in pairs], repr(time.time()),
                "".join("1" if record else "0" for _, record in pairs)]

    def basic_consume(self, queue: str, no_ack: bool = False, *args: Any,
                      **kwargs: Any) -> Any:
        (self._no_ack.add if no_ack else self._no_ack.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """kombu's, whose take records the message only if it is to be acknowledged."""
        self._get_records = not no_ack
        try:
            with self._undelivered_forgotten(queue):
                return super().basic_get(queue, no_ack, **kwargs)
        finally:
            self._get_records = True

    def _may_take(self) -> bool:
        return self._take_due or (
            time.monotonic() - self._idle_since >= (self.brpop_timeout or 1))

    def next_take_in(self) -> float | None:
        """Seconds until the safety net's next take, if one is what the channel waits
        for (an idle consumer with credit and no take sent)."""
        if (self._take_due or self._in_poll or not self.active_queues
                or not self.qos.can_consume()):
            return None
        return max(0.0, (self.brpop_timeout or 1) - (time.monotonic() - self._idle_since))

    @property
    def tracking(self) -> bool:
        """Whether notices are switched on for some queue."""
        return bool(self._armed and self._armed[2])

    def _arm(self, connection: Any) -> None:
        """Switch the notices on for this connection's consumer, once per connection,
        doorbell and set of queues (a take follows at once)."""
        doorbell = self._doorbell
        if doorbell is None or doorbell.client_id is None or self.doorbell_refused:
            return
        prefixes = tracked_prefixes(self.global_keyprefix, self.active_queues)
        state = (connection._sock, doorbell.client_id, prefixes)
        if self._armed == state:
            return
        try:
            connection.send_command("CLIENT", "TRACKING", "OFF")
            connection.read_response()
            if prefixes:
                connection.send_command(
                    "CLIENT", "TRACKING", "ON", "REDIRECT", doorbell.client_id, "BCAST",
                    "NOLOOP", *[word for prefix in prefixes for word in ("PREFIX", prefix)])
                connection.read_response()
        except self.ResponseError as error:
            if "does not exist" in str(error):   # the doorbell is gone on the server
                self._doorbell_lost(error)
                self._armed = None
                return
            self._without_doorbell(error)
        self._armed = state
        self._take_due = True

    def _without_doorbell(self, error: Exception) -> None:
        """The server refused the notices (a Redis before 6.0, an ACL denying
        ``CLIENT TRACKING`` or ``SUBSCRIBE``): take every ``brpop_timeout`` seconds while
        idle instead, as kombu's BRPOP times out."""
        log.warning("no notices of new messages from the broker (%s): an idle worker "
                    "looks for one every %s s", error, self.brpop_timeout or 1)
        self.doorbell_refused = True

    def _doorbell_lost(self, why: object) -> None:
        """The doorbell's connection failed, or its server side is gone. It is only a
        hint, so this is no broker connection loss: take now, and connect it again at
        the next poll (the notices are redirected to its new id before the take)."""
        log.info("the connection for notices of new messages was lost (%s): "
                 "connecting it again", why)
        if self._doorbell is not None:
            self._doorbell.disconnect()
        self._take_due = True

    def check_doorbell(self) -> None:
        """The health tick: ping the doorbell, which only ever receives, so a connection
        a middlebox dropped is found (as kombu pings its pub/sub connection); one that
        left ``SUBCLIENT_MAX_MISSED_HEALTH_CHECKS`` pings unanswered is dropped."""
        doorbell = self._doorbell
        if doorbell is None or doorbell.client_id is None or doorbell.connection._sock is None:
            return
        if doorbell.unanswered >= kombu_redis.SUBCLIENT_MAX_MISSED_HEALTH_CHECKS:
            self._doorbell_lost(f"{doorbell.unanswered} health checks unanswered")
            return
        try:
            doorbell.connection.send_command("PING", check_health=False)
        except self.connection_errors as error:
            self._doorbell_lost(error)
            return
        doorbell.unanswered += 1

    def queue_keys(self) -> frozenset[str]:
        """The keys of the consumed queues, each priority step's too: the only keys
        whose change is a reason to take."""
        return frozenset(self.global_keyprefix + self._q_for_pri(queue, pri)
                         for queue in self.active_queues for pri in self.priority_steps)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self.ack_emulation:
            return super()._brpop_start(timeout)
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        connection = self.client.connection
        self._arm(connection)
        if not self._may_take():
            return None
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]
        self._take_due = False   # a notice read before the reply sets it again
        connection.send_command(*self._take_command(queues, frozenset(self._no_ack)))
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if not self.ack_emulation:
            return bool(super()._brpop_read(**options))
        connection = self.client.connection
        if self._in_poll is None:
            return self._read_unasked(connection)
        try:
            try:
                reply = self.client.parse_response(connection, "EVAL", **options)
            except self.connection_errors:
                connection.disconnect()
                raise
            except self.ResponseError as error:
                # Such as a full server (maxmemory, noeviction) refusing the record: the
                # message stays in its queue; try again after the safety net's wait.
                log.warning("taking a message failed, trying again in %s s: %s",
                            self.brpop_timeout or 1, error)
                reply = None
            if not reply:
                self._idle_since = time.monotonic()
                raise Empty()
            key, raw, recorded = reply
            queue = bytes_to_str(key)[len(self.global_keyprefix):].rsplit(self.sep, 1)[0]
            payload = loads(bytes_to_str(raw))
            self._take_due = True   # more may be waiting
            self._queue_cycle.rotate(queue)
            with self._undelivered_forgotten(queue):
                if recorded:
                    self.recorded.add(payload["properties"]["delivery_tag"])
                self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _read_unasked(self, connection: Any) -> bool:
        """The consuming connection readable with no take pending: no reply is coming.
        A push (``tracking-redir-broken``: the doorbell is gone on the server) is read,
        and the notices armed again on a new doorbell; the end of the connection raises
        as kombu's read does."""
        try:
            push = connection.read_response(push_request=True)
        except self.connection_errors:
            connection.disconnect()
            raise
        if isinstance(push, list) and push and bytes_to_str(push[0]) == "tracking-redir-broken":
            self._doorbell_lost("its server side is gone")
            self._armed = None
        raise Empty()

    @contextlib.contextmanager
    def _undelivered_forgotten(self, queue: str) -> Iterator[None]:
        """A message taken and recorded in the block that kombu refuses before
        :meth:`QoS.append` sees it (a body that cannot be decoded) loses its record again
        before the error goes on: kombu's transport would not have made one, and the
        sweep would bring it back to fail every worker once per visibility timeout
        (docs/broker-restarts.md)."""
        before = frozenset(self.recorded)
        try:
            yield
        except self.connection_errors:
            raise
        except Exception as error:
            for tag in self.recorded - before:
                self.recorded.discard(tag)
                log.error("a message taken from %s could not be delivered (%s: %s): "
                          "removed from unacked", queue, type(error).__name__, error)
                self.qos._remove_from_indices(tag).execute()
            raise

    def _doorbell_read(self) -> bool:
        """Read every notice waiting: the next poll takes if one names a queue key."""
        connection = self.doorbell.connection
        keys = self.queue_keys()
        try:
            notices = [connection.read_response(push_request=True)]
            while connection.can_read(timeout=0):
                notices.append(connection.read_response(push_request=True))
        except self.connection_errors as error:
            self._doorbell_lost(error)
            return False
        self.doorbell.unanswered = 0
        for notice in notices:
            names = invalidated(notice)
            if names is None or not keys.isdisjoint(names):
                self._take_due = True
        return False

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        """``basic_get``: the same atomic take, from one queue."""
        if not self.ack_emulation:
            return super()._get(queue)
        with self.conn_or_acquire() as client:
            no_ack = frozenset() if self._get_records else frozenset([queue])
            reply = client.execute_command(*self._take_command([queue], no_ack))
            self._maybe_update_queues_expire(client, queue)
        if not reply:
            raise Empty()
        _, raw, recorded = reply
        payload = loads(bytes_to_str(raw))
        if recorded:
            self.recorded.add(payload["properties"]["delivery_tag"])
        return payload

    def close(self) -> None:
        if self._in_poll and self.ack_emulation:
            # kombu's close reads the pending reply first and, at a connection error,
            # stops there; Celery then closes the channel again through a transport
            # whose client it has cleared, and the worker exits on the AttributeError.
            # A take's reply lost here leaves its message in unacked: close on.
            with contextlib.suppress(Empty, *self.connection_errors):
                self._brpop_read()
        doorbell, self._doorbell = self._doorbell, None
        try:
            super().close()
        finally:
            if doorbell is not None:
                doorbell.connection.disconnect()


class Poller(kombu_redis.MultiChannelPoller):
    """kombu's poller, which also keeps each consuming channel's doorbell connected and
    polled, and reads it whatever the channel's credit (a notice left unread would keep
    the loop awake)."""

    def on_poll_start(self) -> None:
        for channel in self._channels:
            if not isinstance(channel, Channel) or not channel.ack_emulation:
                continue
            if channel.active_queues and not channel.doorbell_refused:
                self._register_doorbell(channel)
            elif channel.tracking and not channel._in_poll and channel.client.connection:
                # Every queue cancelled (a drain): no notices for them any more.
                channel._arm(channel.client.connection)
        super().on_poll_start()

    def get(self, callback: Any, timeout: float | None = None) -> Any:
        """``drain_events``' wait, which ends in time for the next safety-net take (no
        timer runs without an event loop)."""
        waits = [channel.next_take_in() for channel in self._channels
                 if isinstance(channel, Channel)]
        due = min((wait for wait in waits if wait is not None), default=None)
        if due is not None and (timeout is None or due < timeout):
            timeout = due
        return super().get(callback, timeout)

    def maybe_check_subclient_health(self) -> None:
        """kombu's health tick, which checks the doorbells too."""
        super().maybe_check_subclient_health()
        for channel in self._channels:
            if isinstance(channel, Channel):
                channel.check_doorbell()

    def _register_doorbell(self, channel: Channel) -> None:
        doorbell = channel.doorbell
        ident = (channel, doorbell, "DOORBELL")
        try:
            connected = doorbell.ensure()
        except channel.ResponseError as error:
            doorbell.disconnect()
            channel._without_doorbell(error)
            return
        except channel.connection_errors as error:   # the take, not this, meets a
            channel._doorbell_lost(error)              # broker that is down
            return
        if connected or ident not in self._chan_to_sock:
            self._register(*ident)

    def on_readable(self, fileno: int) -> Any:
        chan_type = self._fd_to_chan.get(fileno)
        if chan_type is not None and chan_type[1] == "DOORBELL":
            return chan_type[0]._doorbell_read()
        return super().on_readable(fileno)

    def handle_event(self, fileno: int, event: int) -> Any:
        """A notice is no delivery: ``drain_events`` goes on (and takes)."""
        chan_type = self._fd_to_chan.get(fileno)
        if chan_type is not None and chan_type[1] == "DOORBELL":
            chan_type[0]._doorbell_read()
            return None
        return super().handle_event(fileno, event)


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = Poller()  # type: ignore[assignment]
