"""``app.notifications.tasks.deliver``: the web app's e-mails (password resets,
memberships, a datastore's failed sync, a check's failure), sent by this worker."""

from __future__ import annotations

from typing import Any

from metamapper.celery import app
from metamapper.notify.mail import deliver as deliver_mail
from metamapper.protocol import DEFAULT_FROM


@app.task(name="app.notifications.tasks.deliver")
def deliver(namespace: str, template: str, subject: str, to_email: str,
            from_email: Any = DEFAULT_FROM, template_dict: dict[str, Any] | None = None) -> bool:
    """Render and send one e-mail; ``from_email`` defaults to
    METAMAPPER_EMAIL_FROM_ADDRESS. True when it went over SMTP (False: the configured
    backend only logs)."""
    sender = None if from_email is DEFAULT_FROM else from_email
    return deliver_mail(namespace, template, subject, to_email, from_email=sender,
                        template_dict=template_dict)
