"""Drain before delete, the broker side: Celery's remote control, addressed by hostname.

The operator asks a pool's workers what they hold (``inspect active``, ``reserved`` and
``scheduled``) or only what they run (``inspect active``, for the not-safe-to-evict
marks: one broadcast to the workers of every pool on the broker), tells the ones it
retires to stop consuming the pool's queues (``cancel_consumer``) and gives a worker
whose drain took too long its queues back (``add_consumer``). Every call goes to the
named workers only (``destination``) and returns as soon as all of them answered
(``limit``), at the latest after :data:`REPLY_TIMEOUT`.

A call runs in a thread (Celery's client blocks), which cancelling the call does not
stop. So every connection of the control has socket timeouts (kombu's Redis transport has
none by default: against a broker that accepts and never answers a thread would wait for
good), and the calls run on threads of their own, at most :data:`CONTROL_THREADS`, never
on the event loop's default pool, which the RabbitMQ and SQS probes use, and at most
:data:`THREADS_PER_BROKER` for one broker: a broker that does not answer holds at worst
its share of the control's threads, and while its share (or all of them) is taken its
further calls are refused (:class:`ControlError`: the step holds and tries again next
cycle), while the other brokers' calls go on.

Amazon SQS has no broadcast, so Celery's remote control does not exist there: the
operator cannot drain an SQS pool (:func:`can_broadcast`) and scales it down plainly (see
``autoscale/shrink.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from metamapper_operator.autoscale.drainplan import Load
from metamapper_operator.brokers.hosts import dialled
from metamapper_operator.references import BrokerAccess

REPLY_TIMEOUT = 1.0
# One whole call (connecting included) may take this long; past it, nobody answered.
CALL_LIMIT = 10.0
# A socket that waits longer than this for the broker (connecting, reading, writing) fails
# the call; above the longest wait for replies that kombu asks of a socket (one second).
SOCKET_TIMEOUT = 5.0
# Threads one broker's calls may hold: one for each object the autoscaler steps at once
# (autoscale/loop.OBJECTS_AT_ONCE, 16), one for each pool step going on beside the cycles
# (loop.LATE_AT_ONCE, 16: a drain waiting for its workers' replies) and one for the round
# of questions; fewer would refuse the calls of a burst shrinking many pools of one
# broker at once (threads busy, not stuck) and hold those pools for a cycle. A broker that
# does not answer holds no more than this: the other brokers' calls still find threads.
THREADS_PER_BROKER = 33
# Threads for all the calls (started only when needed): three brokers not answering at
# once still leave a whole share to the others.
CONTROL_THREADS = 4 * THREADS_PER_BROKER


class ControlError(Exception):
    """The workers could not be reached through the broker (the message says why)."""


def can_broadcast(access: BrokerAccess) -> bool:
    """Whether the broker carries Celery's remote control (SQS does not)."""
    return access.transport != "sqs"


class ControlThreads:
    """The threads the control calls run on, and how many of them calls hold now, in all
    and for each broker (cancelled calls included: their thread runs on until the broker
    answers or its socket times out)."""

    def __init__(self, size: int, per_broker: int) -> None:
        self.size, self.per_broker, self.busy = size, per_broker, 0
        self.by_broker: Counter[BrokerAccess] = Counter()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="worker-control")

    def run(self, broker: BrokerAccess, work: Callable[[], Any]) -> asyncio.Future[Any]:
        """``work`` on one of the threads; ControlError when every one is taken, or
        ``broker``'s share is."""
        with self._lock:
            if self.busy >= self.size:
                raise ControlError(f"all {self.size} worker-control threads are busy "
                                   "(brokers not answering)")
            if self.by_broker[broker] >= self.per_broker:
                raise ControlError(f"{self.per_broker} worker-control threads are busy "
                                   "with this broker (not answering)")
            self.busy += 1
            self.by_broker[broker] += 1

        def tracked() -> Any:
            try:
                return work()
            finally:
                with self._lock:
                    self.busy -= 1
                    self.by_broker[broker] -= 1
                    if not self.by_broker[broker]:
                        del self.by_broker[broker]
        return asyncio.get_running_loop().run_in_executor(self._pool, tracked)


THREADS = ControlThreads(CONTROL_THREADS, THREADS_PER_BROKER)


def _bounded(access: BrokerAccess, transport_options: Mapping[str, object]
             ) -> dict[str, object]:
    """The fleet's transport options with the control's socket timeouts over them."""
    if access.transport == "redis":
        bounds = {"socket_timeout": SOCKET_TIMEOUT, "socket_connect_timeout": SOCKET_TIMEOUT}
    else:   # py-amqp
        bounds = {"connect_timeout": SOCKET_TIMEOUT, "read_timeout": SOCKET_TIMEOUT,
                  "write_timeout": SOCKET_TIMEOUT}
    return {**transport_options, **bounds}


def _app(access: BrokerAccess, transport_options: Mapping[str, object]) -> Any:
    from celery import Celery  # the operator needs Celery only here

    # Called in a thread: resolving the broker's host may block.
    app = Celery("metamapper-operator", broker=dialled(access).url, set_as_current=False)
    app.conf.broker_transport_options = _bounded(access, transport_options)
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_timeout = REPLY_TIMEOUT
    return app


def _loads(app: Any, hostnames: Sequence[str]) -> dict[str, Load]:
    inspect = app.control.inspect(destination=list(hostnames), timeout=REPLY_TIMEOUT,
                                  limit=len(hostnames))
    counts: dict[str, dict[str, int]] = {}
    for kind in ("active", "reserved", "scheduled"):
        for host, tasks in (getattr(inspect, kind)() or {}).items():
            counts.setdefault(host, {})[kind] = len(tasks)
    # A worker that missed one of the three questions is not known to be idle.
    return {host: Load(**found) for host, found in counts.items() if len(found) == 3}


def _active(app: Any, hostnames: Sequence[str]) -> dict[str, int]:
    inspect = app.control.inspect(destination=list(hostnames), timeout=REPLY_TIMEOUT,
                                  limit=len(hostnames))
    return {host: len(tasks) for host, tasks in (inspect.active() or {}).items()}


def _consumers(app: Any, command: str, hostnames: Sequence[str], queues: Sequence[str]
               ) -> set[str]:
    confirmed = set(hostnames)
    for queue in queues:
        replies = getattr(app.control, command)(
            queue, destination=list(hostnames), reply=True, timeout=REPLY_TIMEOUT,
            limit=len(hostnames)) or []
        confirmed &= {host for reply in replies for host in reply}
    return confirmed


class WorkerControl:
    """Celery's remote control of one broker, with a fleet's transport options."""

    def __init__(self, access: BrokerAccess, transport_options: Mapping[str, object]) -> None:
        self.access, self.transport_options = access, dict(transport_options)

    async def _call(self, what: str, work: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            app = _app(self.access, self.transport_options)
            try:
                return work(app)
            finally:
                app.close()
        # Refused (ControlError) while every thread, or this broker's share, is taken.
        running = THREADS.run(self.access, run)
        try:
            async with asyncio.timeout(CALL_LIMIT):
                return await running
        except Exception as err:  # whatever the broker did: the caller holds the pool
            # The type only: a broker's message may quote its URL, password included.
            raise ControlError(f"{what}: {type(err).__name__}") from None

    async def loads(self, hostnames: Sequence[str]) -> dict[str, Load]:
        """What each worker holds; workers that did not answer are missing."""
        if not hostnames:
            return {}
        found: dict[str, Load] = await self._call(
            "asking the workers what they hold", lambda app: _loads(app, hostnames))
        return found

    async def active(self, hostnames: Sequence[str]) -> dict[str, int]:
        """Tasks each worker runs now (one question); workers that did not answer are
        missing."""
        if not hostnames:
            return {}
        found: dict[str, int] = await self._call(
            "asking the workers what they run", lambda app: _active(app, hostnames))
        return found

    async def stop_consuming(self, hostnames: Sequence[str], queues: Sequence[str]
                             ) -> set[str]:
        """``cancel_consumer`` of every queue; the workers that confirmed all of them."""
        if not hostnames:
            return set()
        found: set[str] = await self._call(
            "stopping the workers' consumers",
            lambda app: _consumers(app, "cancel_consumer", hostnames, queues))
        return found

    async def resume_consuming(self, hostnames: Sequence[str], queues: Sequence[str]
                               ) -> set[str]:
        """``add_consumer`` of every queue; the workers that confirmed all of them."""
        if not hostnames:
            return set()
        found: set[str] = await self._call(
            "giving the workers their queues back",
            lambda app: _consumers(app, "add_consumer", hostnames, queues))
        return found


async def active_tasks(control: WorkerControl, hostnames: Sequence[str]
                       ) -> dict[str, int] | None:
    """Tasks each worker runs now, by hostname (silent workers missing), asked in one
    broadcast however many pools they serve; None when the workers cannot be reached
    through the broker."""
    try:
        return await control.active(list(dict.fromkeys(hostnames)))
    except ControlError:
        return None
