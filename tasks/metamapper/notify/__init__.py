"""Notifications: e-mail over SMTP, Slack messages and PagerDuty events.

The one place the worker talks to people. Every sender takes a record and its target,
does one delivery, and raises :class:`DeliveryError` when it failed; none of them logs
or raises anything that holds a password, a webhook URL, a bot token or a routing key.

- :func:`deliver` renders one of Metamapper's e-mails (``namespace``/``template``, the
  arguments of upstream's ``app.notifications.tasks.deliver``) and sends it with the
  SMTP settings of the environment (:class:`MailSettings`); :func:`send_mail` sends a
  :class:`Mail` already written.
- :func:`post_slack` posts a :class:`SlackMessage` through an incoming webhook or a bot
  token (``chat.postMessage``).
- :func:`trigger_pagerduty` sends a :class:`PagerDutyTrigger` to the Events API v2.
"""

from metamapper.notify.errors import DeliveryError
from metamapper.notify.mail import Mail, MailSettings, deliver, send_mail
from metamapper.notify.pagerduty import PagerDutyTrigger, trigger_pagerduty
from metamapper.notify.slack import SlackAttachment, SlackField, SlackMessage, post_slack

__all__ = [
    "DeliveryError",
    "Mail",
    "MailSettings",
    "PagerDutyTrigger",
    "SlackAttachment",
    "SlackField",
    "SlackMessage",
    "deliver",
    "post_slack",
    "send_mail",
    "trigger_pagerduty",
]
