"""The worker's Redis transport (metamapper.redis_transport) against Redis servers of the
tests' own: a message it takes is in ``unacked`` from the same step on, so a broker going
away before the worker has the reply loses nothing (kombu's own transport, in the same
steps, loses it); the worker waits for the server's notices instead of polling, and
keeps kombu's queue order, entries and sweep; and a real worker under a steady stream
of tasks loses none across broker restarts.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import os
import random
import select
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from devenv import services
from devenv.controlplane import free_port
from devenv.waiting import wait_until
from metamapper.celery import MetamapperCelery, app
from metamapper.redis_transport import TRANSPORT, tracked_prefixes, transport_for
from metamapper_operator.brokers import QueueDepth
from metamapper_operator.brokers.redis import RedisProbe
from metamapper_operator.references import BrokerAccess
from tests.conftest import REPO
from tests.helpers import FAST_SWEEP, OwnRedis, command, push_then
from tests.tasks.conftest import Process

QUEUE = "default"
HOLD = "tests.brokers.hold"
KOMBU = "redis"


def client(server: OwnRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url)


def depth(server: OwnRedis) -> tuple[int, int]:
    """The queue's length and the number of entries in ``unacked``."""
    with client(server) as c:
        return int(c.llen(QUEUE)), int(c.hlen("unacked"))


def publish(url: str, body: dict[str, Any], queue: str = QUEUE, priority: int = 0) -> None:
    with Connection(url, transport=KOMBU) as conn:   # any kombu publisher
        target = Queue(queue, Exchange(queue), routing_key=queue)
        Producer(conn).publish(body, exchange=target.exchange, routing_key=queue,
                               declare=[target], priority=priority)


# -- choosing the transport -------------------------------------------------------------

def test_redis_urls_get_the_atomic_transport_unless_a_transport_is_set() -> None:
    assert transport_for("redis://broker:6379/0", None) == TRANSPORT
    assert transport_for("rediss://broker:6380/0;redis://other:6379/0", None) == TRANSPORT
    assert transport_for("amqp://guest@rabbit//", None) is None
    assert transport_for("sqs://", None) is None
    assert transport_for("redis://broker:6379/0", "redis") == "redis"
    assert transport_for(None, None) is None


def test_the_app_connects_to_redis_with_the_atomic_transport() -> None:
    assert app.connection_for_read("redis://broker:6379/0").transport_cls == TRANSPORT
    assert app.connection_for_write("redis://broker:6379/0").transport_cls == TRANSPORT
    assert app.connection_for_write("amqp://guest@rabbit//").transport_cls == "amqp"
    # Its clones (Celery's heartbeats, events) keep it; its URL still reads redis://.
    connection = app.connection_for_read("redis://broker:6379/0")
    assert connection.clone().transport_cls == TRANSPORT
    assert connection.as_uri().startswith("redis://")
    other = MetamapperCelery("other", set_as_current=False)
    other.config_from_object({"broker_url": "redis://broker:6379/0",
                              "broker_transport": "redis"})
    assert other.connection_for_read().transport_cls == "redis"


def test_prefixes_that_overlap_are_tracked_once() -> None:
    assert tracked_prefixes("", ["usage", "default", "checks"]) == (
        "checks", "default", "usage")
    assert tracked_prefixes("mm:", ["celery", "celery_beat", "cel"]) == ("mm:cel",)
    assert tracked_prefixes("", []) == ()


# -- the take ---------------------------------------------------------------------------

def consume(url: str, transport: str, queues: list[str], **options: Any) -> tuple[
        Connection, list[Any]]:
    """A consumer of ``queues`` on a connection of its own; the messages it gets."""
    conn = Connection(url, transport=transport, transport_options=options)
    got: list[Any] = []
    Consumer(conn.default_channel, [Queue(q, Exchange(q), routing_key=q) for q in queues],
             callbacks=[lambda body, message: got.append((body, message))]).consume()
    return conn, got


def drain(conn: Connection, got: list[Any], count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=1)
    assert len(got) >= count, got


def test_a_taken_message_is_in_unacked_as_kombu_records_it(broker: OwnRedis) -> None:
    publish(broker.url, {"n": 1})
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        drain(conn, got, 1)
        (body, message), = got
        with client(broker) as c:
            entry = json.loads(c.hget("unacked", message.delivery_tag))
            score = c.zscore("unacked_index", message.delivery_tag)
        assert body == {"n": 1}
        assert entry == [message._raw, QUEUE, QUEUE]
        assert score is not None and abs(score - time.time()) < 60
        assert depth(broker) == (0, 1)
        message.ack()
        assert depth(broker) == (0, 0)
    finally:
        conn.release()


def test_a_global_key_prefix_prefixes_the_queues_the_record_and_the_notices(
        broker: OwnRedis) -> None:
    prefix = "mm:"
    with Connection(broker.url, transport=TRANSPORT,
                    transport_options={"global_keyprefix": prefix}) as conn:
        target = Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)
        consumer_conn, got = consume(broker.url, TRANSPORT, [QUEUE], global_keyprefix=prefix)
        try:
            with pytest.raises(TimeoutError):
                consumer_conn.drain_events(timeout=0.3)   # waiting for a notice
            Producer(conn).publish({"n": 1}, exchange=target.exchange, routing_key=QUEUE,
                                   declare=[target])
            drain(consumer_conn, got, 1)
            with client(broker) as c:
                assert c.hlen(prefix + "unacked") == 1
                assert c.zcard(prefix + "unacked_index") == 1
                assert c.llen(prefix + QUEUE) == 0
                assert not c.exists("unacked", QUEUE)
            got[0][1].ack()
            with client(broker) as c:
                assert c.hlen(prefix + "unacked") == 0
        finally:
            consumer_conn.release()


def test_the_operators_probe_counts_a_taken_message_in_flight_not_waiting(
        broker: OwnRedis) -> None:
    publish(broker.url, {"n": 1})
    publish(broker.url, {"n": 2})
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        drain(conn, got, 1)

        async def measure() -> dict[str, QueueDepth]:
            probe = RedisProbe(BrokerAccess(transport="redis", url=broker.url))
            try:
                return await probe.measure([QUEUE])
            finally:
                await probe.close()

        assert asyncio.run(measure()) == {QUEUE: QueueDepth(waiting=1, in_flight=1)}
    finally:
        conn.release()


def test_messages_taken_without_acknowledgement_are_not_recorded(broker: OwnRedis) -> None:
    """``no_ack`` consumers and gets (Celery's control replies): nothing in ``unacked``,
    so nothing the sweep would deliver again; a queue consumed with acks beside them is
    recorded."""
    for queue in ("replies", QUEUE, "replies"):
        publish(broker.url, {"queue": queue}, queue=queue)
    conn = Connection(broker.url, transport=TRANSPORT)
    got: list[Any] = []
    try:
        channel: Any = conn.default_channel
        Consumer(channel, [Queue("replies", Exchange("replies"), routing_key="replies")],
                 no_ack=True, callbacks=[lambda body, message: got.append(body)]).consume()
        Consumer(channel, [Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)],
                 callbacks=[lambda body, message: got.append(body)]).consume()
        drain(conn, got, 2)
        assert sorted(body["queue"] for body in got) == [QUEUE, "replies"]
        with client(broker) as c:
            assert c.hlen("unacked") == 1
            assert json.loads(next(iter(c.hvals("unacked"))))[2] == QUEUE
        assert channel.basic_get("replies", no_ack=True).payload == {"queue": "replies"}
        with client(broker) as c:
            assert (c.llen("replies"), c.hlen("unacked")) == (0, 1)
        assert channel.recorded == set()
    finally:
        conn.release()


def test_queues_are_taken_round_robin_as_kombu_takes_them(broker: OwnRedis) -> None:
    for n in range(2):
        publish(broker.url, {"queue": "checks", "n": n}, queue="checks")
        publish(broker.url, {"queue": QUEUE, "n": n})
    conn, got = consume(broker.url, TRANSPORT, [QUEUE, "checks"])
    try:
        drain(conn, got, 4)
        for _, message in got:
            message.ack()
    finally:
        conn.release()
    assert [body["queue"] for body, _ in got] == [QUEUE, "checks", QUEUE, "checks"]


def tracked(server: OwnRedis) -> int:
    """How many connections are tracked for notices in broadcast mode."""
    with client(server) as c:
        return sum("t" in e["flags"] and "B" in e["flags"] for e in c.client_list())


def evals(server: OwnRedis) -> int:
    with client(server) as c:
        return int(c.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))


def test_an_idle_consumer_waits_for_the_servers_notice_without_polling(
        broker: OwnRedis) -> None:
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        before = evals(broker)
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=2)
        # No command waits on the server; its connection is tracked for notices
        # (broadcast mode); and waiting costs at most the safety net's take a second
        # (a poller would run hundreds).
        with client(broker) as c:
            flags = [entry["flags"] for entry in c.client_list()]
        assert not any("b" in f for f in flags), flags
        assert tracked(broker) == 1
        assert evals(broker) - before <= 4
        publish(broker.url, {"n": 1})
        drain(conn, got, 1, timeout=5)
        got[0][1].ack()
    finally:
        conn.release()


def test_a_cancelled_consumer_takes_nothing_and_is_no_longer_notified(
        broker: OwnRedis) -> None:
    """As a drain leaves it: what is published stays in the queue, where the operator
    measures the backlog."""
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=0.3)
        assert tracked(broker) == 1
        channel: Any = conn.default_channel
        channel.basic_cancel(next(iter(channel._consumers)))
        publish(broker.url, {"n": 1})
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=1.5)
        assert tracked(broker) == 0
        assert got == []
        assert depth(broker) == (1, 0)
    finally:
        conn.release()


def test_a_broker_refusing_notices_is_still_consumed_from(tmp_path: Path) -> None:
    """CLIENT TRACKING denied by an ACL: the consumer looks every ``brpop_timeout``
    seconds instead, and its takes are still atomic."""
    server = OwnRedis(tmp_path, options=[
        "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-client|tracking"])
    server.start()
    try:
        conn, got = consume(server.url, TRANSPORT, [QUEUE])
        try:
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.3)
            channel: Any = conn.default_channel
            assert channel.doorbell_refused
            publish(server.url, {"n": 1})
            # Without a timeout too: no notice comes, the safety net's take does.
            waiter = threading.Thread(target=conn.drain_events, daemon=True)
            waiter.start()
            waiter.join(timeout=30)
            assert not waiter.is_alive()
            assert len(got) == 1
            assert depth(server) == (0, 1)
            got[0][1].ack()
        finally:
            conn.release()
    finally:
        server.stop()


def take_then_drop(broker: OwnRedis, transport: str) -> tuple[int, int]:
    """A consumer's take reaches the server, which executes it; the consumer's connection
    drops before it reads the reply, and the broker is killed (SIGKILL) and started
    again: the queue's length and ``unacked``'s size after the restart."""
    publish(broker.url, {"n": 1})
    conn, got = consume(broker.url, transport, [QUEUE], **FAST_SWEEP)
    try:
        channel: Any = conn.default_channel
        conn.transport.cycle._register_BRPOP(channel)   # sends the take (or BRPOP)
        wait_until(lambda: depth(broker)[0] == 0, timeout=10, what="the message taken")
        channel.client.connection.disconnect()           # the reply never read
        broker.stop(signal.SIGKILL)
        broker.start()
        assert got == []
        return depth(broker)
    finally:
        conn.release()


def test_a_message_taken_when_the_connection_drops_is_restored(broker: OwnRedis) -> None:
    assert take_then_drop(broker, TRANSPORT) == (0, 1)
    # The visibility sweep (2 s here) delivers it again.
    conn, got = consume(broker.url, TRANSPORT, [QUEUE], **FAST_SWEEP)
    try:
        time.sleep(FAST_SWEEP["visibility_timeout"])
        conn.default_channel.qos.restore_visible(interval=1)
        drain(conn, got, 1)
        body, message = got[0]
        assert body == {"n": 1}
        assert message.delivery_info["redelivered"]
        message.ack()
    finally:
        conn.release()
    assert depth(broker) == (0, 0)


def test_kombus_own_transport_loses_a_message_taken_when_the_connection_drops(
        broker: OwnRedis) -> None:
    """What the transport exists for: the same steps with kombu's BRPOP."""
    assert take_then_drop(broker, KOMBU) == (0, 0)


# -- doorbell faults, undeliverable messages, credit, priorities ------------------------

def idle(conn: Connection) -> None:
    """Let the consumer connect, arm its notices and find its queues empty."""
    with contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=0.3)


def readable(sock: socket.socket, timeout: float = 5) -> bool:
    return bool(select.select([sock], [], [], timeout)[0])


def redirect_of(server: OwnRedis, client_id: int) -> int:
    """Where the notices of the consuming connection ``client_id`` go."""
    with client(server) as c:
        entry, = [e for e in c.client_list() if int(e["id"]) == client_id]
    return int(entry["redir"])


def consuming_id(channel: Any) -> int:
    connection = channel.client.connection
    connection.send_command("CLIENT", "ID")
    return int(connection.read_response())


def kill_doorbell(server: OwnRedis, channel: Any) -> int:
    """Ends the doorbell's connection on the server; its old client id."""
    old = channel.doorbell.client_id
    with client(server) as c:
        c.execute_command("CLIENT", "KILL", "ID", old)
        wait_until(lambda: all(int(e["id"]) != old for e in c.client_list()),
                   what="the doorbell gone")
    return int(old)


def test_a_push_on_the_consuming_connection_with_no_take_pending_does_not_block(
        broker: OwnRedis) -> None:
    """The doorbell gone on the server: a write to a tracked key sends the consuming
    connection (RESP3) a push while no take is pending. Reading it must not wait for a
    reply to a command never sent; the notices come back on a new doorbell."""
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        idle(conn)
        channel: Any = conn.default_channel
        connection = channel.client.connection
        old = kill_doorbell(broker, channel)
        with client(broker) as c:
            c.set(QUEUE, "not a list")   # a tracked key: the redirect is broken
            c.delete(QUEUE)
        assert readable(connection._sock)
        connection._sock.settimeout(5)   # a read waiting for nothing ends the test
        with pytest.raises(Empty):
            conn.transport.cycle.on_readable(connection._sock.fileno())
        idle(conn)
        publish(broker.url, {"n": 1})
        drain(conn, got, 1)
        assert not channel.doorbell_refused
        assert channel.doorbell.client_id != old
        assert redirect_of(broker, consuming_id(channel)) == channel.doorbell.client_id
        got[0][1].ack()
    finally:
        conn.release()


def test_notices_redirected_to_a_doorbell_gone_are_redirected_to_a_new_one(
        broker: OwnRedis) -> None:
    """The consuming connection made again while the doorbell is already gone on the
    server: the redirect to its old id is refused; that is no reason to poll."""
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        idle(conn)
        channel: Any = conn.default_channel
        old = kill_doorbell(broker, channel)
        channel.client.connection.disconnect()
        idle(conn)   # connects, redirects to the old id before the doorbell is read
        assert not channel.doorbell_refused
        publish(broker.url, {"n": 1})
        drain(conn, got, 1)
        assert channel.doorbell.client_id != old
        assert redirect_of(broker, consuming_id(channel)) == channel.doorbell.client_id
        got[0][1].ack()
    finally:
        conn.release()


def test_a_doorbell_error_is_no_broker_connection_loss(broker: OwnRedis) -> None:
    """The doorbell's connection reset (a middlebox, CLIENT KILL): the consumer takes on
    (no error reaches Celery, which would cancel running tasks and reconnect) and the
    doorbell is connected again."""
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        idle(conn)
        channel: Any = conn.default_channel
        bell = channel.doorbell.connection
        old = kill_doorbell(broker, channel)
        assert readable(bell._sock)
        idle(conn)   # raised ConnectionError
        publish(broker.url, {"n": 1})
        drain(conn, got, 1)
        assert channel.doorbell.client_id != old
        assert tracked(broker) == 1
        got[0][1].ack()
    finally:
        conn.release()


def test_the_doorbell_is_checked_on_the_health_tick(broker: OwnRedis) -> None:
    """A doorbell that answers its pings stays; one whose pings go unanswered (as on a
    half-open connection, which is silent) is dropped, and the consumer takes at once."""
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    cycle = conn.transport.cycle
    try:
        idle(conn)
        channel: Any = conn.default_channel
        first = channel.doorbell.client_id
        for _ in range(3):
            cycle.maybe_check_subclient_health()
            idle(conn)
        assert channel.doorbell.client_id == first
        assert channel.doorbell.connection._sock is not None
        # Ticks with no read between them: from the worker's side, pings unanswered.
        for _ in range(3):
            cycle.maybe_check_subclient_health()
        assert channel.doorbell.connection._sock is None
        assert channel._may_take()
        idle(conn)
        publish(broker.url, {"n": 1})
        drain(conn, got, 1)
        assert channel.doorbell.client_id != first
        assert tracked(broker) == 1
        got[0][1].ack()
    finally:
        conn.release()


POISON = {"body": "not base64!", "content-type": "application/json",
          "content-encoding": "utf-8", "headers": {},
          "properties": {"delivery_tag": "tag-1", "body_encoding": "base64",
                         "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE}}}


def test_a_message_that_cannot_be_decoded_is_not_left_in_unacked(broker: OwnRedis) -> None:
    """Taken, recorded, then refused by kombu's decoding: its record goes, as kombu's
    transport never makes one, so the sweep does not bring it back to fail every worker
    once per visibility timeout; the error still reaches the caller."""
    with client(broker) as c:
        c.lpush(QUEUE, json.dumps(POISON))
        c.lpush("checks", json.dumps(POISON))
    conn, _ = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        channel: Any = conn.default_channel
        with pytest.raises(binascii.Error):
            conn.drain_events(timeout=5)
        assert depth(broker) == (0, 0)
        with pytest.raises(binascii.Error):
            channel.basic_get("checks")
        with client(broker) as c:
            assert (c.llen("checks"), c.hlen("unacked"), c.zcard("unacked_index")) == (0, 0, 0)
        assert channel.recorded == set()
    finally:
        conn.release()


def test_a_notice_read_before_an_empty_takes_reply_is_kept(broker: OwnRedis) -> None:
    """A take finds nothing; a message arrives and its notice is read before the take's
    reply: the next poll takes, not the safety net's a second later."""
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        idle(conn)
        channel: Any = conn.default_channel
        cycle = conn.transport.cycle
        channel._take_due = True
        channel._brpop_start()
        sock = channel.client.connection._sock
        assert readable(sock)
        publish(broker.url, {"n": 1})
        bell = channel.doorbell.connection._sock
        assert readable(bell)
        cycle.on_readable(bell.fileno())
        with pytest.raises(Empty):
            cycle.on_readable(sock.fileno())
        assert channel._may_take()
        drain(conn, got, 1)
        got[0][1].ack()
    finally:
        conn.release()


def test_a_consumer_without_credit_waits_without_spinning(broker: OwnRedis) -> None:
    """Its prefetch used up (lowered, as an ETA task moving to the pool lowers it):
    ``drain_events`` waits for its timeout in one poll or few, not in a loop of polls
    with no wait."""
    conn = Connection(broker.url, transport=TRANSPORT)
    got: list[Any] = []
    try:
        channel: Any = conn.default_channel
        Consumer(channel, [Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)],
                 callbacks=[lambda body, message: got.append(message)],
                 prefetch_count=2).consume()
        publish(broker.url, {"n": 1})
        drain(conn, got, 1)
        idle(conn)
        channel.basic_qos(prefetch_count=1)
        cycle = conn.transport.cycle
        timeouts: list[float | None] = []
        real = cycle.poller.poll

        def counting(timeout: float | None = None) -> Any:
            timeouts.append(timeout)
            return real(timeout)

        cycle.poller.poll = counting
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=1.5)
        assert len(timeouts) <= 3, timeouts
        assert channel.next_take_in() is None
        got[0].ack()
    finally:
        conn.release()


def test_only_a_change_of_one_of_its_queue_keys_wakes_a_consumer(broker: OwnRedis) -> None:
    """Tracking prefixes cover every key that starts with a queue's name; a change of
    ``default_cache`` (Redis results, a cache) is no reason to take. A change of the
    queue's key or of one of its priority keys is."""
    conn, _ = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        idle(conn)
        channel: Any = conn.default_channel
        cycle = conn.transport.cycle
        bell = channel.doorbell.connection

        def notice_wakes(*write: Any) -> bool:
            channel._take_due = False
            with client(broker) as c:
                c.execute_command(*write)
            assert readable(bell._sock)
            cycle.on_readable(bell._sock.fileno())
            return bool(channel._take_due)

        assert not notice_wakes("SET", QUEUE + "_cache_entry", "x")
        assert not notice_wakes("SET", QUEUE + "-meta", "x")
        assert notice_wakes("LPUSH", QUEUE, "x")
        assert notice_wakes("LPUSH", channel._q_for_pri(QUEUE, 3), "x")
    finally:
        conn.release()


def test_priorities_are_taken_in_kombus_order(broker: OwnRedis) -> None:
    """The priority steps first, then the queues round-robin within a step, as kombu's
    BRPOP takes them (a message of higher priority on the second queue comes before one
    of lower priority on the first); each message reaches its own queue's consumer."""
    orders: dict[str, list[tuple[str, int]]] = {}
    for transport in (TRANSPORT, KOMBU):
        orders[transport] = []
        for first, second in ((0, 9), (9, 0)):
            publish(broker.url, {"q": QUEUE, "p": first}, priority=first)
            publish(broker.url, {"q": QUEUE, "p": 3}, priority=3)
            publish(broker.url, {"q": "checks", "p": second}, queue="checks",
                    priority=second)
            conn, got = consume(broker.url, transport, [QUEUE, "checks"])
            try:
                drain(conn, got, 3)
                for _, message in got:
                    assert message.delivery_info["routing_key"] == message.payload["q"]
                    message.ack()
            finally:
                conn.release()
            orders[transport] += [(body["q"], body["p"]) for body, _ in got]
    assert orders[TRANSPORT] == orders[KOMBU]
    # A queue-first order would take the first queue's two messages first, both times.
    assert [q for q, _ in orders[KOMBU]].count("checks") == 2
    assert orders[KOMBU][0][0] == "checks" or orders[KOMBU][3][0] == "checks", orders


def test_a_taken_message_is_recorded_once(broker: OwnRedis) -> None:
    """The take writes the record; the delivery does not write it again."""
    publish(broker.url, {"n": 1})

    def writes() -> int:
        with client(broker) as c:
            stats = c.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                   for name in ("hset", "zadd"))

    before = writes()
    conn, got = consume(broker.url, TRANSPORT, [QUEUE])
    try:
        drain(conn, got, 1)
        assert writes() - before == 2   # the take's HSET and ZADD
        got[0][1].ack()
    finally:
        conn.release()


# -- a real worker: the reply of a take cut off, the broker killed ----------------------

class CuttingRelay(threading.Thread):
    """Forwards 127.0.0.1:``port`` to the broker; the first reply from the broker that
    carries ``marker`` is not forwarded: the relay closes that connection instead (the
    reply lost with it) and sets ``cut``."""

    def __init__(self, target: int, marker: bytes) -> None:
        super().__init__(daemon=True)
        self.target, self.marker = target, marker
        self.listener = socket.create_server(("127.0.0.1", free_port()))
        self.port = self.listener.getsockname()[1]
        self.cut = threading.Event()

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                near, _ = self.listener.accept()
                try:
                    far = socket.create_connection((services.HOST, self.target))
                except OSError:
                    near.close()
                    continue
                for source, sink, watch in ((near, far, False), (far, near, True)):
                    threading.Thread(target=self._pump, args=(source, sink, watch),
                                     daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, watch: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if watch and self.marker in data and not self.cut.is_set():
                    self.cut.set()
                    break
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()


def worker_env(process_env: Callable[..., dict[str, str]], url: str,
               **settings: Any) -> dict[str, str]:
    return process_env(
        METAMAPPER_BROKER_URL=url,
        METAMAPPER_CELERY_SETTINGS=json.dumps({"imports": ["tests.brokers.holdtasks"],
                                               "broker_transport_options": FAST_SWEEP,
                                               **settings}),
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.parametrize(("transport", "lost"), [(None, False), (KOMBU, True)],
                         ids=["the-workers-transport", "kombus-own-transport"])
def test_a_take_whose_reply_is_cut_off_by_a_broker_kill(
        broker: OwnRedis, start_worker: Callable[..., Process],
        process_env: Callable[..., dict[str, str]], tmp_path: Path,
        transport: str | None, lost: bool) -> None:
    """An idle worker takes a task; the connection drops before the reply reaches it,
    and the broker is killed (SIGKILL) and started again. With the worker's transport
    the task is in ``unacked`` and runs after the visibility timeout; with kombu's own
    (``broker_transport = "redis"``) it is in neither the queue nor ``unacked``: lost."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "release").touch()
    task_id = str(uuid.uuid4())
    relay = CuttingRelay(broker.port, task_id.encode())
    relay.start()
    settings = {"broker_transport": transport} if transport else {}
    url = f"redis://127.0.0.1:{relay.port}/0"
    worker = start_worker(worker_env(process_env, url, **settings), queues=QUEUE,
                          name="cut", concurrency=1)
    stream = Stream(broker.url, gate, rate=1)
    try:
        stream.app.send_task(HOLD, args=(str(gate),), task_id=task_id)
        wait_until(relay.cut.is_set, timeout=30, what="the reply cut off")
        broker.stop(signal.SIGKILL)
        broker.start()
        later = str(uuid.uuid4())
        stream.app.send_task(HOLD, args=(str(gate),), task_id=later)
        wait_until(lambda: (gate / f"started-{later}").exists(), timeout=60,
                   what="a later task run")
        if lost:
            # Given the sweep (every second, 2 s visibility timeout) time to find it:
            wait_until(lambda: depth(broker) == (0, 0), timeout=30, what="nothing left")
            time.sleep(2 * FAST_SWEEP["visibility_timeout"])
            assert depth(broker) == (0, 0)
            assert not (gate / f"started-{task_id}").exists()
        else:
            wait_until(lambda: (gate / f"started-{task_id}").exists(), timeout=60,
                       what="the cut-off task run")
            wait_until(lambda: depth(broker) == (0, 0), timeout=30, what="nothing left")
            assert f"[{task_id}] received" in worker.log
    finally:
        stream.app.close()
        relay.close()


def task_message(server: OwnRedis, gate: Path, task_id: str) -> bytes:
    """A hold task message as kombu queues it, made in a database no worker reads."""
    scratch = server.url.rsplit("/", 1)[0] + "/1"
    stream = Stream(scratch, gate, rate=1)
    try:
        stream.app.send_task(HOLD, args=(str(gate),), task_id=task_id)
    finally:
        stream.app.close()
    with redis.Redis.from_url(scratch) as c:
        raw = c.rpop(QUEUE)
    assert isinstance(raw, bytes)
    return raw


def test_a_worker_whose_take_is_in_flight_survives_a_broker_restart(
        broker: OwnRedis, start_worker: Callable[..., Process],
        process_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    """One process runs a held task (delivered, not acknowledged), the other is idle; a
    second task arrives and the broker holds the worker's take (``CLIENT PAUSE WRITE``),
    then stops. Closing the lost connection with a take's reply pending must not end the
    worker (kombu's channel would stop closing there, and Celery's second close of it
    exits the worker); both tasks run after the restart."""
    gate = tmp_path / "gate"
    gate.mkdir()
    worker = start_worker(worker_env(process_env, broker.url), queues=QUEUE, name="busy",
                          concurrency=2)
    stream = Stream(broker.url, gate, rate=1)
    try:
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        stream.app.send_task(HOLD, args=(str(gate),), task_id=first)
        wait_until(lambda: (gate / f"started-{first}").exists(), timeout=30,
                   what="the first task running")
        wait_until(lambda: tracked(broker) == 1, timeout=30, what="the worker idle")
        push_then(broker, QUEUE, task_message(broker, gate, second),
                  command("CLIENT", "PAUSE", "60000", "WRITE"))
        wait_until(lambda: any(e["cmd"] == "eval" and "b" in e["flags"]
                               for e in client(broker).client_list()),
                   timeout=30, what="the worker's take held")
        broker.stop()
        (gate / f"started-{first}").unlink()
        broker.start()
        (gate / "release").touch()
        wait_until(lambda: worker.log.count("Connected to redis://") >= 2
                   or worker.popen.poll() is not None, timeout=60,
                   what="the worker reconnected or gone")
        assert worker.popen.poll() is None, worker.log[-3000:]
        assert "Unrecoverable error" not in worker.log
        # The second from its queue; the first from unacked, after the visibility timeout.
        wait_until(lambda: (gate / f"started-{second}").exists(), timeout=60,
                   what="the second task run")
        wait_until(lambda: (gate / f"started-{first}").exists(), timeout=60,
                   what="the first task run again")
    finally:
        stream.app.close()


# -- a real worker, a steady stream, broker restarts ------------------------------------

class Stream(threading.Thread):
    """Sends hold tasks (released at once) with unique ids at a steady rate until it is
    stopped and at least ``count`` were accepted; ``sent`` holds those the broker
    accepted."""

    def __init__(self, url: str, gate: Path, rate: float, count: int = 0) -> None:
        super().__init__(daemon=True)
        self.app = MetamapperCelery("stream", set_as_current=False)
        self.app.config_from_object({"broker_url": url, "broker_transport_options": FAST_SWEEP})
        self.gate, self.rate, self.count = gate, rate, count
        self.sent: list[str] = []
        self.refused = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not (self.halt.wait(1 / self.rate) and len(self.sent) >= self.count):
            task_id = str(uuid.uuid4())
            try:
                self.app.send_task(HOLD, args=(str(self.gate),), task_id=task_id,
                                   retry=False)
            except Exception:   # the broker is down: not sent
                self.refused += 1
                continue
            self.sent.append(task_id)

    def stop(self, timeout: float = 120) -> None:
        self.halt.set()
        self.join(timeout)
        self.app.close()


def test_a_worker_loses_no_task_across_broker_restarts(
        broker: OwnRedis, start_worker: Callable[..., Process],
        process_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "release").touch()
    env = worker_env(process_env, broker.url)
    workers = [start_worker(env, queues=QUEUE, name=f"w{n}", concurrency=2)
               for n in range(2)]
    stream = Stream(broker.url, gate, rate=20, count=150)
    rng = random.Random(7)
    exits = 0
    stream.start()
    try:
        for n in range(10):
            time.sleep(rng.uniform(0.5, 2.0))
            broker.stop(signal.SIGKILL if n % 2 else signal.SIGTERM)
            time.sleep(rng.uniform(0.0, 0.5))
            broker.start()
            for k, worker in enumerate(workers):   # an exited worker starts again, as
                if worker.popen.poll() is not None:   # its pod's container would
                    exits += 1
                    workers[k] = start_worker(env, queues=QUEUE, name=f"w{k}r{n}",
                                              concurrency=2)
    finally:
        stream.stop()   # once 150 tasks were accepted, however long the restarts took

    def missing() -> list[str]:
        return [t for t in stream.sent if not (gate / f"started-{t}").exists()]

    print(f"{len(stream.sent)} sent, {stream.refused} refused, {exits} worker exits")
    assert not stream.is_alive() and len(stream.sent) >= 150
    wait_until(lambda: not missing(), timeout=60, what="every task sent run")
    wait_until(lambda: depth(broker) == (0, 0), timeout=30, what="the queue and unacked empty")
    # Each worker's consuming connection is tracked again after the restarts.
    assert tracked(broker) == len(workers)
