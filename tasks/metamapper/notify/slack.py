"""Slack messages: through an incoming webhook, or ``chat.postMessage`` with a bot token.

Upstream Metamapper keeps a bot token in the Slack integration and posts with
``chat.postMessage``. An incoming webhook's URL takes the same message (its channel is
fixed by the webhook, so ``channel``, ``username`` and ``icon_url`` may be ignored by
Slack). :func:`post_slack` tells the two apart by the credential: a URL is a webhook.
``METAMAPPER_SLACK_API_URL`` moves the Web API (``https://slack.com/api`` by default).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from metamapper.notify.errors import DeliveryError
from metamapper.notify.http import post_json

API_URL_ENV = "METAMAPPER_SLACK_API_URL"
DEFAULT_API_URL = "https://slack.com/api"


@dataclass(frozen=True)
class SlackField:
    title: str
    value: str
    short: bool = False


@dataclass(frozen=True, kw_only=True)
class SlackAttachment:
    color: str
    title: str
    text: str
    title_link: str | None = None
    fields: tuple[SlackField, ...] = ()
    footer: str | None = None
    ts: int | None = None


@dataclass(frozen=True, kw_only=True)
class SlackMessage:
    channel: str | None = None
    username: str | None = None
    icon_url: str | None = None
    text: str | None = None
    attachments: tuple[SlackAttachment, ...] = field(default=())

    def body(self) -> dict[str, Any]:
        """The JSON Slack takes (keys with no value left out)."""
        return _without_none(asdict(self))


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def is_webhook(credential: str) -> bool:
    return credential.startswith(("https://", "http://"))


def post_slack(credential: str, message: SlackMessage, api_url: str | None = None) -> None:
    """Post ``message`` with ``credential``: an incoming webhook's URL or a bot token."""
    if is_webhook(credential):
        post_json("Slack", credential, message.body())
        return
    base = (api_url or os.environ.get(API_URL_ENV) or DEFAULT_API_URL).rstrip("/")
    answer = post_json("Slack", f"{base}/chat.postMessage", message.body(),
                       headers={"Authorization": f"Bearer {credential}"})
    try:
        reply = json.loads(answer)
    except ValueError:
        raise DeliveryError("Slack answered with something other than JSON") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        error = reply.get("error", "unknown") if isinstance(reply, dict) else "unknown"
        raise DeliveryError(f"Slack refused the message: {error}")
