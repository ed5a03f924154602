"""Notifications against real receivers: aiosmtpd for e-mail, an HTTP server for Slack
and PagerDuty (the request shapes of Slack's Web API and webhooks, PagerDuty's Events
API v2)."""

from __future__ import annotations

import logging
import socket

import pytest

from metamapper.celery import app
from metamapper.notify import (
    DeliveryError,
    MailSettings,
    PagerDutyTrigger,
    SlackAttachment,
    SlackField,
    SlackMessage,
    deliver,
    post_slack,
    trigger_pagerduty,
)
from metamapper.notify.mail import SMTP_BACKEND
from metamapper.notify.templates import BODIES
from tests.tasks.receivers import HttpReceiver, Reply, SmtpServer, http_receiver, smtp_server

__all__ = ["http_receiver", "smtp_server"]

WEBHOOK_PATH = "/services/T0000/B0000/webhooksecret"
ROUTING_KEY = "routingkeysecret0123456789abcdef"


def smtp_settings(server: SmtpServer, **overrides: object) -> MailSettings:
    return MailSettings.from_environ({
        "METAMAPPER_EMAIL_BACKEND": SMTP_BACKEND,
        "METAMAPPER_EMAIL_HOST": server.host,
        "METAMAPPER_EMAIL_PORT": str(server.port),
        "METAMAPPER_EMAIL_FROM_ADDRESS": "alerts@example.org",
        "METAMAPPER_WEBSERVER_ORIGIN": "https://metamapper.example.org/",
        **{k: str(v) for k, v in overrides.items()},
    })


def test_a_check_failure_mail_reaches_the_smtp_server(smtp_server: SmtpServer) -> None:
    sent = deliver(
        namespace="checks", template="check_failed",
        subject="Metamapper check failed: orders <2026-12-06T20:00:00>",
        to_email="oncall@example.org",
        template_dict={"check_name": "orders", "check_error": "1 out of 2 <expectations>",
                       "check_url": "https://mm.example.org/acme/datastores/dw/checks/c1",
                       "workspace_slug": "acme"},
        settings=smtp_settings(smtp_server),
    )

    assert sent is True
    [mail] = smtp_server.mails
    assert mail.recipients == ("oncall@example.org",)
    assert mail.sender == "alerts@example.org"
    assert mail.message["Subject"] == "Metamapper check failed: orders <2026-12-06T20:00:00>"
    text, html = mail.body("plain"), mail.body("html")
    assert "orders" in text and "acme" in text
    assert "1 out of 2 <expectations>" in text
    assert "https://mm.example.org/acme/datastores/dw/checks/c1" in text
    assert "1 out of 2 &lt;expectations&gt;" in html
    assert 'href="https://mm.example.org/acme/datastores/dw/checks/c1"' in html


def test_the_sender_given_by_the_web_app_wins(smtp_server: SmtpServer) -> None:
    deliver("authentication", "password_was_reset", "Your Metamapper password was changed",
            "ann@example.org", from_email="security@example.org",
            template_dict={"to_address": "ann@example.org"},
            settings=smtp_settings(smtp_server))

    [mail] = smtp_server.mails
    assert mail.sender == "security@example.org"
    assert "ann@example.org" in mail.body("plain")


@pytest.mark.parametrize("name", sorted(BODIES))
def test_every_upstream_mail_renders_with_the_web_apps_variables(
        name: str, smtp_server: SmtpServer) -> None:
    namespace, template = name.split("/")
    variables = {
        "email": "ann@example.org", "uid": "MQ", "token": "tok-123", "to_address": "ann@x.org",
        "workspace_name": "Acme", "permissions": "Member", "user_exists": False,
        "check_name": "orders", "check_error": "boom", "check_url": "https://c",
        "workspace_slug": "acme", "datastore_name": "Warehouse", "datastore_slug": "dw",
    }
    deliver(namespace, template, "subject", "ann@example.org", template_dict=variables,
            settings=smtp_settings(smtp_server))

    [mail] = smtp_server.mails
    text = mail.body("plain")
    assert text.strip()
    assert "{{" not in text and "{{" not in mail.body("html")
    if name == "authentication/reset_password":
        assert "https://metamapper.example.org/password/confirm/MQ/tok-123" in text
    if name == "definitions/datastore_sync_failure":
        assert "https://metamapper.example.org/acme/datastores/dw/runs" in text


def test_upstreams_default_backend_sends_nothing_and_logs_no_body(
        smtp_server: SmtpServer, caplog: pytest.LogCaptureFixture) -> None:
    settings = smtp_settings(
        smtp_server, METAMAPPER_EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")
    with caplog.at_level(logging.INFO, logger="metamapper.notify"):
        sent = deliver("authentication", "reset_password", "Reset", "ann@example.org",
                       template_dict={"email": "ann@example.org", "uid": "MQ",
                                      "token": "secret-reset-token"},
                       settings=settings)

    assert sent is False
    assert smtp_server.mails == []
    assert "Reset" in caplog.text
    assert "secret-reset-token" not in caplog.text


def test_an_unknown_template_is_an_error() -> None:
    with pytest.raises(DeliveryError, match="sso/domain_verification_failed"):
        deliver("sso", "domain_verification_failed", "tbd", "ann@example.org",
                settings=MailSettings(backend=SMTP_BACKEND, host="127.0.0.1"))


def test_an_unreachable_smtp_server_is_a_delivery_error_without_the_password() -> None:
    settings = MailSettings(backend=SMTP_BACKEND, host="127.0.0.1", port=_closed_port(),
                            user="mailer", password="smtp-password-1")
    with pytest.raises(DeliveryError, match="SMTP server") as raised:
        deliver("checks", "check_failed", "s", "ann@example.org", settings=settings)

    assert "smtp-password-1" not in str(raised.value)
    assert "smtp-password-1" not in repr(settings)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


MESSAGE = SlackMessage(
    channel="#data-quality", username="Metamapper", icon_url="https://icons.example/m.png",
    attachments=(SlackAttachment(
        color="#B71F1F", title="Metamapper check failed: orders", title_link="https://c",
        text="1 out of 2 expectation(s) were not met.",
        fields=(SlackField("Datastore", "Warehouse"), SlackField("Severity", "error")),
        footer="acme", ts=1765000000,
    ),),
)


def test_a_slack_message_through_an_incoming_webhook(http_receiver: HttpReceiver) -> None:
    post_slack(http_receiver.url + WEBHOOK_PATH, MESSAGE)

    [request] = http_receiver.to(WEBHOOK_PATH)
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    body = request.json()
    assert body["channel"] == "#data-quality"
    [attachment] = body["attachments"]
    assert attachment["title"] == "Metamapper check failed: orders"
    assert attachment["text"] == "1 out of 2 expectation(s) were not met."
    assert attachment["fields"] == [
        {"title": "Datastore", "value": "Warehouse", "short": False},
        {"title": "Severity", "value": "error", "short": False},
    ]
    assert attachment["ts"] == 1765000000


def test_a_refused_webhook_does_not_show_its_url(http_receiver: HttpReceiver) -> None:
    http_receiver.on(WEBHOOK_PATH, Reply(404, b"no_service"))

    with pytest.raises(DeliveryError, match="HTTP 404") as raised:
        post_slack(http_receiver.url + WEBHOOK_PATH, MESSAGE)

    assert "webhooksecret" not in str(raised.value)
    assert "127.0.0.1" not in str(raised.value)


def test_a_slack_message_with_a_bot_token(http_receiver: HttpReceiver) -> None:
    http_receiver.on("/api/chat.postMessage", Reply.of_json({"ok": True, "ts": "1.2"}))

    post_slack("xoxb-bot-token", MESSAGE, api_url=http_receiver.url + "/api")

    [request] = http_receiver.to("/api/chat.postMessage")
    assert request.headers["authorization"] == "Bearer xoxb-bot-token"
    assert request.json()["channel"] == "#data-quality"


def test_slacks_refusal_in_a_200_is_an_error(http_receiver: HttpReceiver) -> None:
    http_receiver.on("/api/chat.postMessage",
                     Reply.of_json({"ok": False, "error": "channel_not_found"}))

    with pytest.raises(DeliveryError, match="channel_not_found") as raised:
        post_slack("xoxb-bot-token", MESSAGE, api_url=http_receiver.url + "/api")
    assert "xoxb" not in str(raised.value)


def test_a_pagerduty_trigger_has_the_events_api_v2_shape(http_receiver: HttpReceiver) -> None:
    http_receiver.on("/v2/enqueue", Reply.of_json(
        {"status": "success", "message": "Event processed", "dedup_key": "c1-100"}, 202))

    trigger_pagerduty(ROUTING_KEY, PagerDutyTrigger(
        summary="Metamapper check failed: orders", severity="critical",
        component="Warehouse (dw)", group="Acme (acme)", dedup_key="c1-100",
        href="https://c"), events_url=http_receiver.url + "/v2/enqueue")

    [request] = http_receiver.to("/v2/enqueue")
    assert request.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "c1-100",
        "payload": {"summary": "Metamapper check failed: orders", "severity": "critical",
                    "source": "Metamapper", "component": "Warehouse (dw)",
                    "group": "Acme (acme)"},
        "links": [{"href": "https://c", "text": "View in Metamapper"}],
    }


def test_a_refused_pagerduty_event_does_not_show_the_routing_key(
        http_receiver: HttpReceiver) -> None:
    http_receiver.on("/v2/enqueue", Reply.of_json({"status": "invalid event"}, 400))

    with pytest.raises(DeliveryError, match="PagerDuty answered HTTP 400") as raised:
        trigger_pagerduty(ROUTING_KEY, PagerDutyTrigger(summary="s", severity="info"),
                          events_url=http_receiver.url + "/v2/enqueue")
    assert ROUTING_KEY not in str(raised.value)


def test_pagerduty_takes_only_its_four_severities() -> None:
    with pytest.raises(ValueError, match="critical, error, warning, info"):
        trigger_pagerduty(ROUTING_KEY, PagerDutyTrigger(summary="s", severity="fatal"),
                          events_url="http://127.0.0.1:9/")


def test_the_web_apps_deliver_message_is_sent_from_the_configured_address(
        smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """``app.notifications.tasks.deliver`` with the kwargs the web app sends (no
    ``from_email``: upstream's default is its METAMAPPER_EMAIL_FROM_ADDRESS setting)."""
    for key, value in {
        "METAMAPPER_EMAIL_BACKEND": SMTP_BACKEND, "METAMAPPER_EMAIL_HOST": smtp_server.host,
        "METAMAPPER_EMAIL_PORT": str(smtp_server.port),
        "METAMAPPER_EMAIL_FROM_ADDRESS": "metamapper@example.org",
    }.items():
        monkeypatch.setenv(key, value)
    app.loader.import_default_modules()

    result = app.tasks["app.notifications.tasks.deliver"].apply(kwargs={
        "namespace": "definitions", "template": "datastore_sync_failure",
        "subject": 'Sync failed for your "Warehouse" datastore in acme',
        "to_email": "oncall@example.org",
        "template_dict": {"datastore_name": "Warehouse", "datastore_slug": "dw",
                          "workspace_slug": "acme"},
    })

    assert result.get() is True
    [mail] = smtp_server.mails
    assert mail.sender == "metamapper@example.org"
    assert mail.message["Subject"] == 'Sync failed for your "Warehouse" datastore in acme'
    assert "http://localhost:5000/acme/datastores/dw/runs" in mail.body("plain")
