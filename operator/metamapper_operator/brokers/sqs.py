"""Queue depth on Amazon SQS, with queue names spelt the way kombu's SQS transport does.

SQS has no call that reads several queues, so a measurement costs one
GetQueueAttributes per queue (``ApproximateNumberOfMessages``: visible, and
``ApproximateNumberOfMessagesNotVisible``: received and not yet deleted, i.e. in flight),
plus one GetQueueUrl the first time a queue is seen. Both counts are approximate and
eventually consistent (AWS documents about a minute); messages still in their delivery
delay (``ApproximateNumberOfMessagesDelayed``) are not counted.

A queue whose name, as kombu spells it, SQS never accepts (over 80 characters with the
prefix, or other than ASCII letters, digits, ``-`` and ``_``) fails alone (``failed``),
without a request.

boto3 is blocking, so each measurement runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import Collection
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from metamapper_operator.brokers.base import DEFAULT_TIMEOUT, QueueDepth, probe_error, scrubbed
from metamapper_operator.references import BrokerAccess
from metamapper_urls import parse_url

#: kombu's region when neither the options nor the AWS configuration name one.
DEFAULT_REGION = "us-east-1"

# kombu.transport.SQS.CHARS_REPLACE_TABLE: '.' becomes '-', '-' and '_' stay, any other
# punctuation becomes '_'.
_REPLACE = {ord(c): "_" for c in string.punctuation if c not in "-_."} | {ord("."): "-"}
_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
# SQS's rule for queue names: 1 to 80 characters, a FIFO queue's ".fifo" included.
_VALID = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")


def entity_name(name: str) -> str:
    """The SQS queue name kombu uses for ``name`` (a ``.fifo`` suffix is kept)."""
    if name.endswith(".fifo"):
        return name[: -len(".fifo")].translate(_REPLACE) + ".fifo"
    return name.translate(_REPLACE)


def refused(name: str) -> str | None:
    """Why SQS never accepts the queue name ``name`` (kombu's spelling); None if it does."""
    if _VALID.fullmatch(name):
        return None
    return (f"SQS queue name {name!r} (kombu's spelling of the prefix and the queue) is not "
            "1 to 80 ASCII letters, digits, '-' or '_' (then '.fifo' for a FIFO queue)")


def endpoint_url(url: str) -> str | None:
    """kombu's endpoint: ``http://host:port`` when the broker URL names a host."""
    parsed = parse_url(url)
    if not parsed.host:
        return None
    return f"http://{parsed.host}:{parsed.port}" if parsed.port else f"http://{parsed.host}"


class SqsProbe:
    """GetQueueAttributes per queue; queue URLs are cached."""

    source = "sqs: visible + not visible"

    def __init__(self, access: BrokerAccess, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.round_trips = 0
        self.unconsumed: tuple[str, ...] | None = None  # cannot tell
        self.failed: dict[str, str] = {}
        self._access, self._timeout = access, timeout
        self._where = f"sqs {access.display}"
        self._client: Any = None
        self._urls: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        async with self._lock:
            self.failed = {}
            try:
                return await asyncio.to_thread(self._measure, list(dict.fromkeys(queues)))
            except (BotoCoreError, ClientError, OSError) as err:
                raise probe_error(self._access, self._where, err) from None

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _measure(self, queues: list[str]) -> dict[str, QueueDepth]:
        if self._client is None:
            self._client = self._new_client()
        names = {queue: entity_name(self._access.queue_name_prefix + queue) for queue in queues}
        failed = {queue: scrubbed(self._access, why) for queue, name in names.items()
                  if (why := refused(name)) is not None}
        depths = {queue: self._depth(name) for queue, name in names.items()
                  if queue not in failed}
        self.failed = failed
        return depths

    def _depth(self, name: str) -> QueueDepth:
        try:
            if name not in self._urls:
                self.round_trips += 1
                self._urls[name] = self._client.get_queue_url(QueueName=name)["QueueUrl"]
            self.round_trips += 1
            attributes = self._client.get_queue_attributes(
                QueueUrl=self._urls[name],
                AttributeNames=["ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesNotVisible"],
            )["Attributes"]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in _MISSING:
                raise
            self._urls.pop(name, None)
            return QueueDepth(waiting=0, in_flight=0)
        return QueueDepth(waiting=int(attributes["ApproximateNumberOfMessages"]),
                          in_flight=int(attributes["ApproximateNumberOfMessagesNotVisible"]))

    def _new_client(self) -> Any:
        """An SQS client like kombu's: credentials from the access, else the URL, else
        the default chain; no retries, so a failure is reported within the timeout."""
        access, parsed = self._access, parse_url(self._access.url)
        key_id = access.aws_access_key_id or parsed.username or None
        secret = access.aws_secret_access_key or parsed.password or None
        session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                region_name=access.region)
        config = Config(connect_timeout=self._timeout, read_timeout=self._timeout,
                        retries={"total_max_attempts": 1})
        return session.client("sqs", region_name=session.region_name or DEFAULT_REGION,
                              endpoint_url=endpoint_url(access.url), config=config)
