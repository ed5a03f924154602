"""Queue depth on RabbitMQ: the management API when it is configured, else AMQP.

The management API gives ready and unacknowledged counts of every queue of the vhost in
one HTTP request, and the timestamp of each queue's first message (its age) in another.
The first request asks for ``disable_stats=true&enable_queue_totals=true``: on RabbitMQ
3.8 and later the counts then come from the queues themselves, current to the request.
Without those parameters (and on older servers, which ignore them) they come from the
statistics database, which lags by ``collect_statistics_interval`` (5 seconds by
default) and omits the counts of a queue it has not sampled yet.

Without the management API, AMQP's passive ``queue.declare`` answers with the ready
count only (one round trip per queue): messages delivered to a consumer and not yet
acknowledged are not visible over AMQP.

Both fail a queue alone (``failed``) when RabbitMQ can never hold its name
(:func:`refused`: over 255 bytes, or the reserved ``amq.`` prefix); over AMQP also when
the broker refuses the passive declare (another connection's exclusive queue, say).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import amqp

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, QueueDepth, probe_error, scrubbed
from metamapper_operator.references import BrokerAccess
from metamapper_urls import parse_url, redact, without_credentials

AMQP_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671}
#: The longest queue name AMQP 0-9-1 carries (a short string).
MAX_NAME_BYTES = 255


def refused(queue: str) -> str | None:
    """Why RabbitMQ can never hold a queue named ``queue`` (no client may declare it);
    None when it can."""
    size = len(queue.encode("utf-8", "surrogatepass"))  # as py-amqp encodes it
    if size > MAX_NAME_BYTES:
        return f"queue name of {size} bytes: RabbitMQ allows at most {MAX_NAME_BYTES}"
    if queue.startswith("amq."):
        return "queue names starting with 'amq.' are reserved by RabbitMQ"
    return None


def refusals(queues: Collection[str]) -> dict[str, str]:
    """The queues of ``queues`` RabbitMQ can never hold -> why."""
    return {queue: why for queue in queues if (why := refused(queue)) is not None}


@dataclass(frozen=True)
class AmqpAddress:
    """Where an AMQP broker URL points, read the way kombu reads it."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    ssl: bool


def amqp_address(url: str) -> AmqpAddress:
    """kombu's reading: guest/guest by default, ``/`` when the path names no vhost."""
    parsed = parse_url(url)
    return AmqpAddress(
        host=parsed.host or "localhost", port=parsed.port or AMQP_PORTS[parsed.scheme],
        user=parsed.username or "guest", password=parsed.password or "guest",
        vhost=parsed.path or "/", ssl=parsed.scheme == "amqps",
    )


def queue_depth(row: dict[str, Any], now: float) -> QueueDepth:
    """One queue's row of the management API as a depth.

    ``head_message_timestamp`` is the AMQP ``timestamp`` property (whole seconds) of the
    queue's first message, which the worker app sets on every task it sends; RabbitMQ
    omits it for a message without one (or not paged in): the age is then unknown.
    """
    waiting = int(row.get("messages_ready") or 0)
    stamp = row.get("head_message_timestamp")
    if waiting == 0:
        age: float | None = 0.0
    elif isinstance(stamp, int | float) and not isinstance(stamp, bool):
        age = max(0.0, now - stamp)
    else:
        age = None
    return QueueDepth(waiting=waiting,
                      in_flight=int(row.get("messages_unacknowledged") or 0), oldest_age=age)


class ManagementProbe:
    """GET /api/queues/<vhost>: ready + unacknowledged for every queue in one request, the
    head messages' timestamps in a second."""

    source = "rabbitmq management API: ready + unacked"

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        if access.management_url is None:
            raise ValueError("ManagementProbe needs access.management_url")
        self.round_trips = 0
        self._clock = clock
        self.unconsumed: tuple[str, ...] | None = None
        self.failed: dict[str, str] = {}
        self._access = access
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        parsed = parse_url(access.management_url)
        self._where = f"rabbitmq management API {redact(access.management_url)}"
        # Credentials travel in the Authorization header, never in the URL (which error
        # messages show).
        user = access.management_user or parsed.username or ""
        password = access.management_password or parsed.password or ""
        self._headers = {"Authorization": aiohttp.encode_basic_auth(user, password)
                         } if user else {}
        base = without_credentials(access.management_url).rstrip("/")
        vhost = amqp_address(access.url).vhost
        self._url = f"{base}/api/queues/{quote(vhost, safe='')}"

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        self.failed = {}
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        counts = await self._get({
            "disable_stats": "true", "enable_queue_totals": "true",
            "columns": "name,messages_ready,messages_unacknowledged,consumers"})
        # The head message's timestamp is a statistic: RabbitMQ leaves it out of the
        # disable_stats answer, so a second request reads it (it lags by at most
        # collect_statistics_interval).
        heads = await self._get({"columns": "name,head_message_timestamp"})
        found = {row.get("name"): row for row in counts}
        self.unconsumed = tuple(str(row["name"]) for row in counts if row.get("name")
                                and int(row.get("messages_ready") or 0) > 0
                                and int(row.get("consumers") or 0) == 0)
        for row in heads:
            if row.get("name") in found:
                found[row["name"]]["head_message_timestamp"] = row.get("head_message_timestamp")
        now = self._clock()
        self.failed = refusals(queues)
        # A queue the API does not list (or has no counts for yet) is empty.
        return {queue: queue_depth(found.get(queue, {}), now) for queue in queues
                if queue not in self.failed}

    async def _get(self, params: dict[str, str]) -> list[dict[str, Any]]:
        assert self._session is not None
        try:
            self.round_trips += 1
            async with self._session.get(self._url, params=params) as response:
                response.raise_for_status()
                rows: list[dict[str, Any]] = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
            raise probe_error(self._access, self._where, err) from None
        return rows

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AmqpProbe:
    """A passive ``queue.declare`` per queue over one kept-open AMQP connection.

    py-amqp is blocking, so each measurement runs in a worker thread; its socket
    timeouts bound every step. A queue that does not exist counts as empty (the broker
    closes the channel on it, and the probe opens another).
    """

    source = "rabbitmq AMQP passive declare: ready only"
    unconsumed: tuple[str, ...] | None = None  # AMQP cannot tell

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.round_trips = 0
        self.failed: dict[str, str] = {}
        self._access, self._timeout = access, timeout
        self._address = amqp_address(access.url)
        self._where = f"rabbitmq {access.display}"
        self._connection: amqp.Connection | None = None
        self._channel: amqp.Channel | None = None
        self._lock = asyncio.Lock()

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        async with self._lock:
            self.failed = {}
            try:
                return await asyncio.to_thread(self._measure, list(dict.fromkeys(queues)))
            except (amqp.exceptions.AMQPError, OSError) as err:
                await asyncio.to_thread(self._disconnect)
                raise probe_error(self._access, self._where, err) from None

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._disconnect)

    def _measure(self, queues: list[str]) -> dict[str, QueueDepth]:
        channel = self._open_channel()
        failed = refusals(queues)
        depths = {}
        for queue in (queue for queue in queues if queue not in failed):
            self.round_trips += 1
            try:
                _name, ready, _consumers = channel.queue_declare(queue, passive=True)
            except amqp.exceptions.NotFound:
                ready = 0
                channel = self._open_channel()
            except amqp.exceptions.ChannelError as err:  # the channel is closed, not the rest
                failed[queue] = scrubbed(self._access, f"{type(err).__name__}: {err}")
                channel = self._open_channel()
                continue
            depths[queue] = QueueDepth(waiting=ready, in_flight=None)
        self.failed = failed
        return depths

    def _open_channel(self) -> amqp.Channel:
        """The open channel, after connecting (again) if need be."""
        if self._connection is None:
            a = self._address
            connection = amqp.Connection(
                f"{a.host}:{a.port}", userid=a.user, password=a.password,
                virtual_host=a.vhost, ssl=a.ssl, connect_timeout=self._timeout,
                read_timeout=self._timeout, write_timeout=self._timeout,
            )
            self._connection = connection
            connection.connect()
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        return self._channel

    def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.close()
            except (amqp.exceptions.AMQPError, OSError):
                connection.collect()
