"""PagerDuty: a ``trigger`` event through the Events API v2.

``METAMAPPER_PAGERDUTY_EVENTS_URL`` moves the endpoint
(``https://events.pagerduty.com/v2/enqueue`` by default). The routing key is the
integration key upstream Metamapper keeps in its PagerDuty integration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from metamapper.notify.http import post_json

EVENTS_URL_ENV = "METAMAPPER_PAGERDUTY_EVENTS_URL"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass(frozen=True, kw_only=True)
class PagerDutyTrigger:
    summary: str
    severity: str
    source: str = "Metamapper"
    component: str | None = None
    group: str | None = None
    dedup_key: str | None = None
    href: str | None = None
    link_text: str = "View in Metamapper"

    def body(self, routing_key: str) -> dict[str, Any]:
        payload = {"summary": self.summary, "severity": self.severity, "source": self.source}
        if self.component is not None:
            payload["component"] = self.component
        if self.group is not None:
            payload["group"] = self.group
        event: dict[str, Any] = {
            "routing_key": routing_key, "event_action": "trigger", "payload": payload,
        }
        if self.dedup_key is not None:
            event["dedup_key"] = self.dedup_key
        if self.href is not None:
            event["links"] = [{"href": self.href, "text": self.link_text}]
        return event


def trigger_pagerduty(routing_key: str, trigger: PagerDutyTrigger,
                      events_url: str | None = None) -> None:
    """Send ``trigger`` to the service of ``routing_key``."""
    if trigger.severity not in SEVERITIES:
        raise ValueError(f"PagerDuty severity must be one of {', '.join(SEVERITIES)}")
    url = events_url or os.environ.get(EVENTS_URL_ENV) or DEFAULT_EVENTS_URL
    post_json("PagerDuty", url, trigger.body(routing_key))
