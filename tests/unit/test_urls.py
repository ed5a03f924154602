"""The one URL helper shared by the operator and the worker (``metamapper_urls``):
decoded credentials, checked ports, redaction of every credential with one mask."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metamapper_operator.brokers.base import secrets_of
from metamapper_operator.references import BrokerAccess
from metamapper_urls import (
    REDACTED,
    URLError,
    has_credentials,
    hosts_of,
    in_namespace,
    parse_url,
    redact,
    redact_text,
    scrub,
    secrets_in,
    short_tls_hosts,
    without_credentials,
)


@pytest.mark.parametrize(("url", "seen"), [
    ("redis://redis:6379/0", "redis://redis.team.svc:6379/0"),
    ("redis://:p%40ss@redis/0", "redis://:p%40ss@redis.team.svc/0"),
    ("amqp://u:p@rabbitmq:5672//", "amqp://u:p@rabbitmq.team.svc:5672//"),
    ("redis://a:1/0;redis://b.other:2/0", "redis://a.team.svc:1/0;redis://b.other:2/0"),
    ("redis://redis.other:6379/0", "redis://redis.other:6379/0"),
    ("redis://10.0.0.1:6379/0", "redis://10.0.0.1:6379/0"),
    ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("sqs://", "sqs://"),
    ("redis://2130706433:6379/0", "redis://2130706433:6379/0"),
    ("redis://0:6379/0", "redis://0:6379/0"),
    ("rediss://:pw@redis:6380/0", "rediss://:pw@redis:6380/0"),
    ("amqps://u:p@rabbitmq:5671//", "amqps://u:p@rabbitmq:5671//"),
    ("https://rabbit:15671", "https://rabbit:15671"),
    ("http://rabbit:15672", "http://rabbit.team.svc:15672"),
])
def test_a_short_service_name_is_named_in_the_fleets_namespace(url: str, seen: str) -> None:
    assert in_namespace(url, "team") == seen


def test_hosts_are_every_host_of_a_failover_list() -> None:
    assert hosts_of("redis://:p@a:1/0;redis://b.other:2/0;sqs://") == ("a", "b.other")


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
    ("sqs://", "sqs://"),
    ("postgresql://app:s3cret@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("mysql://root@127.0.0.1:3306/db", "mysql://root@127.0.0.1:3306/db"),
    ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
    ("sqlite:////var/lib/m.db", "sqlite:////var/lib/m.db"),
    ("postgresql://u:pw@[::1/x", "postgresql://u:***@[::1/x"),  # urlsplit refuses it
])
def test_every_credential_of_a_url_is_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_error_messages_lose_query_passwords_and_key_ids() -> None:
    access = BrokerAccess(transport="redis", url="redis://r:6379/0?password=p%40ss")
    message = "auth failed for redis://r:6379/0?password=p%40ss (password p@ss)"
    assert "p@ss" not in scrub(message, secrets_of(access))
    sqs = BrokerAccess(transport="sqs", url="sqs://", aws_access_key_id="AKIAKEYID",
                       aws_secret_access_key="s3cret")
    assert scrub("InvalidClientTokenId: AKIAKEYID", secrets_of(sqs)) == (
        "InvalidClientTokenId: ***")


def test_a_url_urlsplit_refuses_is_a_url_error_without_its_password() -> None:
    with pytest.raises(URLError) as raised:
        parse_url("postgresql://u:s3cret@[::1/x")
    assert "s3cret" not in str(raised.value)


def test_every_url_in_a_text_is_redacted() -> None:
    text = ('could not connect to "postgresql://u:hunter2@h/db": refused; '
            "retrying redis://r:6379/0?password=s3cret&db=1 and sqs://AKIAKEYID:k@")
    assert redact_text(text) == (
        'could not connect to "postgresql://u:***@h/db": refused; '
        "retrying redis://r:6379/0?password=***&db=1 and sqs://***:***@")


def test_scrub_removes_known_secrets_and_every_url_credential() -> None:
    text = "token t0ken refused for amqp://guest:guest@rabbit/vh"
    assert scrub(text, ["t0ken"]) == f"token {REDACTED} refused for amqp://guest:***@rabbit/vh"


_password = st.text(string.ascii_letters + string.digits + "!$&'()*+,;=-._~", min_size=4)


@given(password=_password, user=st.text(string.ascii_lowercase, min_size=1, max_size=8))
def test_a_password_is_never_shown(password: str, user: str) -> None:
    url = f"postgresql://{user}:{password}@db.example:5432/catalog"
    shown = f":{password}@"
    assert shown not in redact(url)
    assert shown not in redact_text(f"error for {url}")
    assert shown not in redact_text(f"error for '{url}': refused")


@pytest.mark.parametrize(("url", "address"), [
    ("http://user:p%40ss@rabbit:15672/?password=x#top", "http://rabbit:15672/"),
    ("http://guest:guest@[::1]:15672", "http://[::1]:15672"),
    ("https://rabbit/mgmt", "https://rabbit/mgmt"),
])
def test_an_address_without_credentials_keeps_host_port_and_path(url: str, address: str) -> None:
    assert without_credentials(url) == address


def test_every_url_of_a_failover_broker_url_is_redacted() -> None:
    url = "redis://:first@a:6379/0;redis://:second@b:6379/0;amqp://u:third@c//?password=x"
    assert redact(url) == "redis://:***@a:6379/0;redis://:***@b:6379/0;amqp://u:***@c//?password=***"
    assert redact_text(f"connect {url} failed") == f"connect {redact(url)} failed"
    assert {"first", "second", "third", "x"} <= set(secrets_in(url))


@pytest.mark.parametrize(("url", "credential"), [
    ("redis://:pw@r:6379/0", True),
    ("redis://r:6379/0?password=pw", True),
    ("redis://r:6379/0?PASSWORD=pw", True),
    ("amqp://u@r//?sasl_password=pw", True),
    ("sqs://AKIAKEYID@", True),
    ("redis://r:6379/0;redis://:pw@b:6379/0", True),
    ("redis://r:6379/0", False),
    ("redis://user@r:6379/0", False),
    ("redis://r:6379/0?socket_timeout=1", False),
    ("sqs://", False),
    ("redis://a:6379/0;redis://b:6379/0", False),
])
def test_has_credentials_sees_every_place_a_url_carries_one(url: str, credential: bool) -> None:
    assert has_credentials(url) is credential


def test_the_short_hosts_of_tls_urls_are_the_ones_left_as_written() -> None:
    assert short_tls_hosts("rediss://:p@a:1/0;rediss://b.other:2/0;redis://c:3/0") == ("a",)
    assert short_tls_hosts("https://rabbit:15671") == ("rabbit",)
    assert short_tls_hosts("amqps://u:p@10.0.0.1:5671//") == ()
