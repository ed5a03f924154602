"""The SQS probe against moto's SQS server (AWS itself cannot be reached from here),
with queues created and filled by the real Celery app through kombu's SQS transport."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import boto3
from celery import Celery

from metamapper_operator.brokers import QueueDepth, probe_for
from metamapper_operator.brokers.sqs import entity_name
from metamapper_operator.references import BrokerAccess


async def test_visible_and_not_visible_per_queue(
        sqs_endpoint: str, publisher: Callable[..., Celery]) -> None:
    prefix = f"mm-{uuid.uuid4().hex[:8]}."
    url = f"sqs://{urlsplit(sqs_endpoint).netloc}"
    app = publisher(url, region="us-east-1", is_secure=False, queue_name_prefix=prefix)
    for queue, count in (("default", 3), ("checks.high", 2)):
        for _ in range(count):
            app.send_task("metamapper.health.heartbeat", queue=queue)

    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    # kombu turns every '.' of prefix + queue into '-'.
    dashed = prefix.replace(".", "-")
    urls = sqs.list_queues(QueueNamePrefix=dashed)["QueueUrls"]
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == [
        f"{dashed}checks-high", f"{dashed}default"]
    default_url = next(u for u in urls if u.endswith("default"))
    received = sqs.receive_message(QueueUrl=default_url, MaxNumberOfMessages=1,
                                   VisibilityTimeout=600)
    assert len(received["Messages"]) == 1  # received, not deleted: in flight

    probe = probe_for(
        BrokerAccess(transport="sqs", url=url, region="us-east-1", queue_name_prefix=prefix)
    )
    assert probe.source == "sqs: visible + not visible"
    try:
        expected = {
            "default": QueueDepth(waiting=2, in_flight=1),
            "checks.high": QueueDepth(waiting=2, in_flight=0),
            "usage": QueueDepth(waiting=0, in_flight=0),
        }
        assert await probe.measure(["default", "checks.high", "usage"]) == expected
        # GetQueueUrl for each of the three, GetQueueAttributes for the two that exist.
        assert probe.round_trips == 5
        assert await probe.measure(["default", "checks.high", "usage"]) == expected
        # Known queue URLs are cached; a missing queue is looked up again.
        assert probe.round_trips == 5 + 3
    finally:
        await probe.close()


def test_queue_names_are_spelt_like_kombu() -> None:
    from kombu.transport.SQS import Channel

    kombu_channel = Channel.__new__(Channel)  # entity_name reads no state
    for name in ("default", "mm.checks", "a:b/c-d_e", "jobs.fifo", "x.y.fifo"):
        assert entity_name(name) == kombu_channel.entity_name(name), name


#: Names the CRD admits (``^[^,\s]+$``, at most 200 characters) that kombu spells as
#: names SQS accepts (its table turns punctuation into '_', '.' into '-').
VALID_STRANGE_NAMES = ["%d%s*?[]", "'\"\\", "{hash}tag", "-", "a.b:c", "x" * 70, "jobs.fifo"]
#: ... and names it spells as names SQS never accepts: more than 80 characters (the
#: prefix included), or characters other than ASCII letters, digits, '-' and '_'.
INVALID_NAMES = ["x" * 75, "é", "ü.ñ:ß", "a\x00b", "\U0001f600", "q\x06\x163"]


async def test_a_name_sqs_cannot_hold_fails_only_its_queue_and_strange_names_are_measured(
        sqs_endpoint: str) -> None:
    prefix = f"mm-{uuid.uuid4().hex[:4]}-"  # 8 characters
    url = f"sqs://{urlsplit(sqs_endpoint).netloc}"
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint, region_name="us-east-1")
    for n, name in enumerate(VALID_STRANGE_NAMES):
        attributes = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        queue_url = sqs.create_queue(QueueName=entity_name(prefix + name),
                                     Attributes=attributes)["QueueUrl"]
        for m in range(n + 1):
            sqs.send_message(QueueUrl=queue_url, MessageBody="{}",
                             **({"MessageGroupId": "g", "MessageDeduplicationId": str(m)}
                                if name.endswith(".fifo") else {}))
    probe = probe_for(
        BrokerAccess(transport="sqs", url=url, region="us-east-1", queue_name_prefix=prefix))
    try:
        depths = await probe.measure([*VALID_STRANGE_NAMES, *INVALID_NAMES])
        assert set(probe.failed) == set(INVALID_NAMES)
        assert probe.failed["é"] == (
            f"SQS queue name '{prefix}é' (kombu's spelling of the prefix and the queue) is "
            "not 1 to 80 ASCII letters, digits, '-' or '_' (then '.fifo' for a FIFO queue)")
        assert {name: depth.waiting for name, depth in depths.items()} == {
            name: n + 1 for n, name in enumerate(VALID_STRANGE_NAMES)}
        # GetQueueUrl and GetQueueAttributes for each valid name, nothing for the others.
        assert probe.round_trips == 2 * len(VALID_STRANGE_NAMES)
        await probe.measure(VALID_STRANGE_NAMES)
        assert probe.failed == {}
    finally:
        await probe.close()
