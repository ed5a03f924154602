"""The one URL reader: decoded credentials, checked ports, redaction of every credential."""

from __future__ import annotations

import pytest

from metamapper_operator.brokers.base import scrub, secrets_of
from metamapper_operator.references import BrokerAccess
from metamapper_operator.urls import URLError, parse_url, redact


def test_credentials_are_percent_decoded() -> None:
    parsed = parse_url("amqp://us%2Fer:p%40ss%2Fw%25rd@rabbit:5672/v%2Fh")
    assert (parsed.username, parsed.password, parsed.path) == ("us/er", "p@ss/w%rd", "v/h")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:notaport/0", "redis://:pw@r:99999/0"])
def test_a_port_no_client_can_use_is_a_url_error(url: str) -> None:
    with pytest.raises(URLError, match="port"):
        parse_url(url)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@r:6379/0", "redis://:***@r:6379/0"),
    ("amqp://user:p%40ss@rabbit:5672/vh", "amqp://user:***@rabbit:5672/vh"),
    ("redis://r:6379/0", "redis://r:6379/0"),
    ("redis://r:6379/0?password=s3cret&db=1", "redis://r:6379/0?password=***&db=1"),
    ("redis://:pw@r:6379/0?socket_timeout=1", "redis://:***@r:6379/0?socket_timeout=1"),
    ("sqs://AKIAKEYID:s3cret@", "sqs://***:***@"),
    ("sqs://AKIAKEYID:s3cret@localhost:4566", "sqs://***:***@localhost:4566"),
])
def test_every_credential_of_a_url_is_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_error_messages_lose_query_passwords_and_key_ids() -> None:
    access = BrokerAccess("redis", "redis://r:6379/0?password=p%40ss")
    message = "auth failed for redis://r:6379/0?password=p%40ss (password p@ss)"
    assert "p@ss" not in scrub(message, secrets_of(access))
    sqs = BrokerAccess("sqs", "sqs://", aws_access_key_id="AKIAKEYID",
                       aws_secret_access_key="s3cret")
    assert scrub("InvalidClientTokenId: AKIAKEYID", secrets_of(sqs)) == (
        "InvalidClientTokenId: ***")
