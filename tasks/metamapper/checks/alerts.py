"""A failed execution's alerts: one per due alert rule, on the rule's channel.

The channels are upstream's (``checks_alertrule.channel`` and ``channel_config``):

- ``EMAIL``: ``{"emails": [...]}``, the ``checks/check_failed`` e-mail to each address;
- ``SLACK``: ``{"integration_id", "channel", "severity"}``, a message with the
  workspace's Slack integration (its token, or an incoming webhook's URL, decrypted from
  ``integration_config.auth``; its ``meta`` may name the bot and its icon);
- ``PAGERDUTY``: ``{"integration_id", "severity"}``, a trigger with the integration's key,
  deduplicated per execution (``<check id>-<epoch>``).

Each names the check, its failure (the execution's error, or how many expectations were
not met) and links to the execution in the web app. The time in the title is the
execution's (upstream shows the check's creation time there, which never changes).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from dataclasses import dataclass

import psycopg

from metamapper.checks import store
from metamapper.metastore.fernet import Cipher, UndecryptableSecret
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

log = logging.getLogger(__name__)

SEVERITY_COLORS = {"info": "#C8C8C8", "warning": "#FFD30D", "error": "#B71F1F",
                   "critical": "#B71F1F"}
DEFAULT_BOT_NAME = "Metamapper"


class AlertError(Exception):
    """A rule's alert was not sent; the message names the rule, never a credential."""


@dataclass(frozen=True, kw_only=True)
class Failure:
    """What every alert of one failed execution says."""

    subject: store.Subject
    execution_id: int
    epoch: int
    error: str
    origin: str

    @property
    def timestamp(self) -> str:
        return dt.datetime.fromtimestamp(self.epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")

    @property
    def title(self) -> str:
        return f"Metamapper check failed: {self.subject.check_name} <{self.timestamp}>"

    @property
    def url(self) -> str:
        """The check's page in the web app with this execution selected (its Relay id)."""
        selected = base64.b64encode(f"CheckExecutionType:{self.execution_id}".encode()).decode()
        s = self.subject
        return (f"{self.origin}/{s.workspace_slug}/datastores/{s.datastore_slug}"
                f"/checks/{s.check_id}?selectedExecution={selected}")


def error_of(finished: store.Finished) -> str:
    return finished.error or (
        f"{finished.failed} out of {finished.results} expectation(s) were not met.")


@dataclass(frozen=True)
class Sender:
    """Sends a failure's alert on each channel; the metastore gives the integrations."""

    conn: psycopg.Connection
    cipher: Cipher
    mail: MailSettings

    def send(self, rule: store.AlertRule, failure: Failure) -> None:
        try:
            if rule.channel == "EMAIL":
                self._email(rule, failure)
            elif rule.channel == "SLACK":
                self._slack(rule, failure)
            elif rule.channel == "PAGERDUTY":
                self._pagerduty(rule, failure)
            else:
                raise AlertError(f"unknown channel {rule.channel!r}")
        except (DeliveryError, UndecryptableSecret, KeyError, ValueError) as exc:
            raise AlertError(f"alert rule {rule.name!r} ({rule.channel}): {_reason(exc)}") from None
        except AlertError as exc:
            raise AlertError(f"alert rule {rule.name!r} ({rule.channel}): {exc}") from None

    def _email(self, rule: store.AlertRule, failure: Failure) -> None:
        for address in rule.channel_config.get("emails", []):
            deliver("checks", "check_failed", failure.title, address, settings=self.mail,
                    template_dict={"check_error": failure.error,
                                   "check_name": failure.subject.check_name,
                                   "check_url": failure.url,
                                   "workspace_slug": failure.subject.workspace_slug})

    def _credential(self, rule: store.AlertRule, failure: Failure,
                    kind: str) -> tuple[str, store.Integration]:
        integration_id = str(rule.channel_config["integration_id"])
        found = store.integration(self.conn, failure.subject.workspace_id, integration_id, kind)
        if found is None:
            raise AlertError(f"the workspace has no {kind} integration {integration_id!r}")
        credential = self.cipher.decrypt(found.auth, f"the {kind} integration {integration_id!r}")
        return credential, found

    def _slack(self, rule: store.AlertRule, failure: Failure) -> None:
        credential, found = self._credential(rule, failure, "SLACK")
        severity = str(rule.channel_config["severity"])
        s = failure.subject
        post_slack(credential, SlackMessage(
            channel=rule.channel_config["channel"],
            username=found.meta.get("bot_name") or DEFAULT_BOT_NAME,
            icon_url=found.meta.get("icon_url") or None,
            attachments=(SlackAttachment(
                color=SEVERITY_COLORS.get(severity, SEVERITY_COLORS["critical"]),
                title=failure.title, title_link=failure.url, text=failure.error,
                fields=(SlackField("Datastore", s.datastore_name),
                        SlackField("Severity", severity)),
                footer=s.workspace_slug, ts=failure.epoch,
            ),),
        ))

    def _pagerduty(self, rule: store.AlertRule, failure: Failure) -> None:
        routing_key, _ = self._credential(rule, failure, "PAGERDUTY")
        s = failure.subject
        trigger_pagerduty(routing_key, PagerDutyTrigger(
            summary=failure.title, severity=str(rule.channel_config["severity"]),
            href=failure.url, component=f"{s.datastore_name} ({s.datastore_slug})",
            group=f"{s.workspace_name} ({s.workspace_slug})",
            dedup_key=f"{s.check_id}-{failure.epoch}",
        ))


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"its channel_config lacks {exc.args[0]!r}"
    return str(exc)


@dataclass(frozen=True)
class Dispatch:
    """What ``dispatch`` did: the rules alerted and the errors of those that were not."""

    alerted: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()


def dispatch(sender: Sender, check_id: str, epoch: int, now: dt.datetime) -> Dispatch:
    """Alert every due rule of a failed execution; a rule alerted records it as its
    ``last_failure`` (so it waits its interval), one that failed does not."""
    conn = sender.conn
    finished = store.finished(conn, check_id, epoch)
    if finished is None:
        raise LookupError(f"check {check_id!r} has no finished execution at epoch {epoch}")
    if finished.status == store.SUCCESS:
        return Dispatch()
    rules = store.due_alert_rules(conn, check_id, now)
    if not rules:
        return Dispatch()
    log.info("Check %s failed at epoch %s: alerting %d rule(s)", check_id, epoch, len(rules))
    failure = Failure(subject=store.subject(conn, check_id), execution_id=finished.execution_id,
                      epoch=epoch, error=error_of(finished), origin=sender.mail.origin)
    alerted: list[int] = []
    errors: list[str] = []
    for rule in rules:
        try:
            sender.send(rule, failure)
        except AlertError as exc:
            log.error("Check %s: %s", check_id, exc)
            errors.append(str(exc))
            continue
        store.set_last_failure(conn, rule.id, finished.execution_id)
        alerted.append(rule.id)
    return Dispatch(tuple(alerted), tuple(errors))
