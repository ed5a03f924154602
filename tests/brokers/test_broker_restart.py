"""A Redis broker restart against a real worker: where kombu's Redis transport loses a task.

kombu's Redis transport takes a message off its queue list with ``BRPOP`` and only then,
in a second command on another connection, records it in the ``unacked`` hash that its
visibility sweep restores from. Until that second command lands, the message exists
only in the server's reply buffer or in the worker's memory. A broker that goes away in
between loses it, whatever its persistence: the append-only file keeps the pop.

These tests put the broker's end exactly there, without racing: a task message is pushed
to an idle worker's queue in the same write as the command that stops the broker (the
reply to the worker's ``BRPOP`` is never sent), or the broker holds the worker's writes
(``CLIENT PAUSE WRITE``) after sending the reply and is then stopped. They also pin what
a broker restart does not lose: tasks cut off while running come back through the
visibility sweep, which the worker registers again on its new connection; and a worker
told to stop consuming (``cancel_consumer``) before a planned restart loses nothing.
The last one pins, as an expected failure, that a worker with a task running and a
BRPOP waiting exits at a broker restart. See docs/broker-restarts.md.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from devenv.waiting import wait_until
from tests.helpers import OwnRedis
from tests.tasks.conftest import Process

HOLD = "tests.brokers.hold"
QUEUE = "default"
WORKER = "probe0@test"
# Production's persistence: Redis's default snapshots plus an append-only file.
PRODUCTION = ["--save", "3600 1 300 100 60 10000", "--appendonly", "yes",
              "--appendfsync", "everysec"]
# Seconds, so that a message left in ``unacked`` would be back within the test.
SWEEP = {"visibility_timeout": 2, "unacked_restore_interval": 1,
         "unacked_restore_throttle": 1, "unacked_mutex_expire": 2}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[OwnRedis]:
    home = tmp_path / "broker"
    home.mkdir()
    server = OwnRedis(home, options=PRODUCTION)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """The hold task's folder: ``started-<id>`` per run; ``release`` lets runs finish."""
    folder = tmp_path / "gate"
    folder.mkdir()
    return folder


def command(*args: str | bytes) -> bytes:
    """One Redis command in the protocol's own encoding."""
    parts = [arg if isinstance(arg, bytes) else arg.encode() for arg in args]
    return b"".join([b"*%d\r\n" % len(parts),
                     *(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)])


def task_message(broker: OwnRedis, publisher: Callable[..., Celery], gate: Path) -> tuple[
        str, bytes]:
    """A real hold task message (its id, its bytes as kombu queues them), made in a
    database the worker does not consume from."""
    scratch = broker.url.rsplit("/", 1)[0] + "/1"
    task_id = str(uuid.uuid4())
    publisher(scratch).send_task(HOLD, args=(str(gate),), task_id=task_id)
    client = redis.Redis.from_url(scratch)
    raw = client.rpop(QUEUE)
    client.close()
    assert isinstance(raw, bytes)
    return task_id, raw


def client_list(broker: OwnRedis) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(broker.url)
    try:
        return list(client.client_list())
    finally:
        client.close()


def waiting_in_brpop(broker: OwnRedis) -> bool:
    return any(c["cmd"] == "brpop" and "b" in c["flags"] for c in client_list(broker))


def push_then(broker: OwnRedis, raw: bytes, *then: bytes) -> None:
    """LPUSH ``raw`` to the queue and run ``then`` in the same write: the server handles
    them in one pass of its event loop, before it sends any reply."""
    with socket.create_connection(("127.0.0.1", broker.port)) as conn:
        conn.sendall(command("LPUSH", QUEUE, raw) + b"".join(then))
        conn.recv(1024)


def reconnected(worker: Process) -> bool:
    return worker.log.count("Connected to redis://") >= 2


def broker_state(broker: OwnRedis) -> tuple[int, int]:
    """The queue's length and the number of messages in kombu's ``unacked`` hash."""
    client = redis.Redis.from_url(broker.url)
    try:
        return int(client.llen(QUEUE)), int(client.hlen("unacked"))
    finally:
        client.close()


def ran(gate: Path, task_id: str) -> bool:
    return (gate / f"started-{task_id}").exists()


def assert_gone(broker: OwnRedis, publisher: Callable[..., Celery], worker: Process,
                gate: Path, task_id: str) -> None:
    """The task never ran and is nowhere a later delivery could come from: not in the
    queue, not in ``unacked`` (once a later task ran and was acknowledged, with the sweep
    running every second), never received by the worker."""
    later = str(uuid.uuid4())
    publisher(broker.url).send_task(HOLD, args=(str(gate),), task_id=later)
    wait_until(lambda: ran(gate, later), timeout=60, what="a later task run")
    wait_until(lambda: broker_state(broker) == (0, 0), timeout=30,
               what="the queue and unacked empty")
    assert not ran(gate, task_id)
    assert f"[{task_id}] received" not in worker.log


def test_a_broker_stopping_in_the_pass_that_served_a_pop_loses_the_message(
        broker: OwnRedis, publisher: Callable[..., Celery], worker: Callable[..., Process],
        gate: Path, tmp_path: Path) -> None:
    (gate / "release").touch()
    probe = worker(broker.url, QUEUE, **SWEEP)
    task_id, raw = task_message(broker, publisher, gate)
    wait_until(lambda: waiting_in_brpop(broker), what="the worker waiting in BRPOP")

    push_then(broker, raw, command("SHUTDOWN"))
    broker.stop()   # already gone: reaps it
    broker.start()

    # The pop is on disk: the append-only file has the push, then the pop of the queue.
    aof = b"".join(p.read_bytes()
                   for p in sorted((tmp_path / "broker").glob("appendonlydir/*.incr.aof")))
    assert b"RPOP" in aof[aof.index(task_id.encode()):]
    wait_until(lambda: reconnected(probe), timeout=60, what="the worker reconnected")
    assert_gone(broker, publisher, probe, gate, task_id)


def test_a_broker_stopping_before_the_worker_records_a_popped_message_loses_it(
        broker: OwnRedis, publisher: Callable[..., Celery], worker: Callable[..., Process],
        gate: Path) -> None:
    (gate / "release").touch()
    probe = worker(broker.url, QUEUE, **SWEEP)
    task_id, raw = task_message(broker, publisher, gate)
    wait_until(lambda: waiting_in_brpop(broker), what="the worker waiting in BRPOP")

    # The reply to BRPOP goes out; the worker's MULTI/ZADD/HSET into unacked is held.
    push_then(broker, raw, command("CLIENT", "PAUSE", "60000", "WRITE"))
    wait_until(lambda: any(c["cmd"] == "zadd" and "x" in c["flags"] and "b" in c["flags"]
                           for c in client_list(broker)),
               what="the worker's record in unacked held")
    broker.stop()
    broker.start()

    wait_until(lambda: reconnected(probe), timeout=60, what="the worker reconnected")
    assert_gone(broker, publisher, probe, gate, task_id)


def test_tasks_cut_off_by_a_restart_come_back_through_the_sweep_on_the_new_connection(
        broker: OwnRedis, publisher: Callable[..., Celery], worker: Callable[..., Process],
        gate: Path) -> None:
    """Two held tasks fill the worker (prefetch 1 per process), so no BRPOP is waiting:
    the restart cuts them off (late acks: they stay in ``unacked``, which the append-only
    file keeps). The worker's attempt to put them back as its consumer restarts fails,
    the broker being down; so only the sweep of its new connection delivers them again."""
    probe = worker(broker.url, QUEUE, **SWEEP)
    app = publisher(broker.url)
    ids = [str(uuid.uuid4()) for _ in range(2)]
    for task_id in ids:
        app.send_task(HOLD, args=(str(gate),), task_id=task_id)
    wait_until(lambda: all(ran(gate, t) for t in ids), timeout=60, what="both running")
    assert not waiting_in_brpop(broker)

    broker.stop()
    for task_id in ids:
        (gate / f"started-{task_id}").unlink()
    (gate / "release").touch()
    wait_until(lambda: "Cannot connect to redis://" in probe.log, timeout=30,
               what="the consumer restarted while the broker is down")
    broker.start()

    wait_until(lambda: all(ran(gate, t) for t in ids), timeout=60, what="both run again")
    wait_until(lambda: all(f"[{t}] succeeded" in probe.log for t in ids), timeout=60,
               what="both finished")
    wait_until(lambda: broker_state(broker) == (0, 0), timeout=30, what="both acknowledged")


def test_a_worker_that_stopped_consuming_before_the_restart_loses_nothing(
        broker: OwnRedis, publisher: Callable[..., Celery], worker: Callable[..., Process],
        gate: Path) -> None:
    """The planned restart: ``cancel_consumer`` first (as a drain does), no BRPOP left
    waiting, then the same stop that loses a message above; ``add_consumer`` after."""
    (gate / "release").touch()
    probe = worker(broker.url, QUEUE, **SWEEP)
    task_id, raw = task_message(broker, publisher, gate)
    assert publisher(broker.url).control.cancel_consumer(QUEUE, destination=[WORKER],
                                                         reply=True)
    wait_until(lambda: not waiting_in_brpop(broker), what="no BRPOP waiting")

    push_then(broker, raw, command("SHUTDOWN"))
    broker.stop()
    broker.start()
    wait_until(lambda: reconnected(probe), timeout=60, what="the worker reconnected")

    assert broker_state(broker) == (1, 0)
    app = publisher(broker.url)
    with app.connection_for_write() as fresh:   # the pooled ones knew the stopped server
        wait_until(lambda: app.control.add_consumer(QUEUE, destination=[WORKER], reply=True,
                                                    connection=fresh),
                   timeout=30, what="add_consumer confirmed")
    wait_until(lambda: ran(gate, task_id), timeout=60, what="the task run")


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "Celery 5.7.0 closes the lost connection twice (collect(), then close()); kombu's "
    "channel, whose first close stopped at its waiting BRPOP, restores its unacknowledged "
    "message on the second through a transport whose client collect() has cleared: "
    "AttributeError, an unrecoverable error, and the worker exits"))
def test_a_worker_with_a_task_running_and_a_brpop_waiting_survives_a_broker_restart(
        broker: OwnRedis, publisher: Callable[..., Celery], worker: Callable[..., Process],
        gate: Path) -> None:
    """One process runs a held task (delivered, not acknowledged), the other is idle, so
    the worker's channel has a BRPOP waiting when the broker goes away."""
    probe = worker(broker.url, QUEUE, **SWEEP)
    task_id = str(uuid.uuid4())
    publisher(broker.url).send_task(HOLD, args=(str(gate),), task_id=task_id)
    wait_until(lambda: ran(gate, task_id), timeout=60, what="the task running")
    wait_until(lambda: waiting_in_brpop(broker), what="the idle process's BRPOP waiting")

    broker.stop()
    broker.start()
    (gate / "release").touch()
    wait_until(lambda: reconnected(probe) or "Unrecoverable error" in probe.log, timeout=60,
               what="the worker reconnected or stopping")
    assert "Unrecoverable error" not in probe.log, [
        line for line in probe.log.splitlines() if "Unrecoverable error" in line]
