"""E-mail over SMTP, configured by upstream Metamapper's environment variables.

``METAMAPPER_EMAIL_BACKEND`` chooses whether mail is sent at all: Django's SMTP backend
(``django.core.mail.backends.smtp.EmailBackend``) sends through ``METAMAPPER_EMAIL_HOST``,
``_PORT`` (25), ``_USER``, ``_PASSWORD``, ``_USE_TLS`` (STARTTLS), ``_USE_SSL``, from
``METAMAPPER_EMAIL_FROM_ADDRESS``; any other backend (upstream's default is the console)
sends nothing and logs the subject and the recipient only, because a body may hold a
password-reset link. Links in the messages start at ``METAMAPPER_WEBSERVER_ORIGIN``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

from metamapper.notify.errors import DeliveryError
from metamapper.notify.templates import render

log = logging.getLogger(__name__)

SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
DEFAULT_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM = "friends@metamapper.io"
DEFAULT_ORIGIN = "http://localhost:5000"
TIMEOUT_SECONDS = 30.0


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, kw_only=True)
class MailSettings:
    """Where and how mail goes; ``password`` is left out of the ``repr``."""

    backend: str = DEFAULT_BACKEND
    host: str | None = None
    port: int = 25
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    use_ssl: bool = False
    from_address: str = DEFAULT_FROM
    origin: str = DEFAULT_ORIGIN

    @property
    def sends(self) -> bool:
        """Whether the backend sends over SMTP (anything else only logs)."""
        return self.backend == SMTP_BACKEND

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> MailSettings:
        env = os.environ if environ is None else environ
        return cls(
            backend=env.get("METAMAPPER_EMAIL_BACKEND") or DEFAULT_BACKEND,
            host=env.get("METAMAPPER_EMAIL_HOST") or None,
            port=int(env.get("METAMAPPER_EMAIL_PORT") or 25),
            user=env.get("METAMAPPER_EMAIL_USER") or None,
            password=env.get("METAMAPPER_EMAIL_PASSWORD") or None,
            use_tls=_flag(env.get("METAMAPPER_EMAIL_USE_TLS")),
            use_ssl=_flag(env.get("METAMAPPER_EMAIL_USE_SSL")),
            from_address=env.get("METAMAPPER_EMAIL_FROM_ADDRESS") or DEFAULT_FROM,
            origin=(env.get("METAMAPPER_WEBSERVER_ORIGIN") or DEFAULT_ORIGIN).rstrip("/"),
        )


@dataclass(frozen=True, kw_only=True)
class Mail:
    """One message to one recipient: a plain-text body and, optionally, an HTML one."""

    to: str
    subject: str
    text: str
    html: str | None = None
    from_address: str | None = None


def send_mail(mail: Mail, settings: MailSettings) -> bool:
    """Send ``mail``; True when it went over SMTP, False when the backend only logs."""
    if not settings.sends:
        log.info("E-mail not sent (METAMAPPER_EMAIL_BACKEND is %s): %r to %s",
                 settings.backend, mail.subject, mail.to)
        return False
    if not settings.host:
        raise DeliveryError("e-mail: METAMAPPER_EMAIL_HOST is not set")
    message = _message(mail, settings)
    try:
        with _connect(settings, settings.host) as smtp:
            if settings.use_tls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.user:
                smtp.login(settings.user, settings.password or "")
            smtp.send_message(message)
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"e-mail: the SMTP server answered {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"e-mail: {type(exc).__name__} from the SMTP server") from None
    log.info("E-mail sent: %r to %s", mail.subject, mail.to)
    return True


def deliver(namespace: str, template: str, subject: str, to_email: str,
            from_email: str | None = None, template_dict: Mapping[str, Any] | None = None,
            settings: MailSettings | None = None) -> bool:
    """Render Metamapper's e-mail ``namespace/template`` and send it (upstream's arguments).

    The template sees ``template_dict`` plus ``domain`` (the web app's origin) and
    ``now``, as upstream's do.
    """
    settings = settings or MailSettings.from_environ()
    context = {**(template_dict or {}), "domain": settings.origin,
               "now": dt.datetime.now(dt.UTC)}
    body = render(namespace, template, context)
    mail = Mail(to=to_email, subject=subject, text=body.text, html=body.html,
                from_address=from_email)
    return send_mail(mail, settings)


def _message(mail: Mail, settings: MailSettings) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = mail.subject
    message["From"] = mail.from_address or settings.from_address
    message["To"] = mail.to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="metamapper")
    message.set_content(mail.text)
    if mail.html is not None:
        message.add_alternative(mail.html, subtype="html")
    return message


def _connect(settings: MailSettings, host: str) -> smtplib.SMTP:
    if settings.use_ssl:
        return smtplib.SMTP_SSL(host, settings.port, timeout=TIMEOUT_SECONDS,
                                context=ssl.create_default_context())
    return smtplib.SMTP(host, settings.port, timeout=TIMEOUT_SECONDS)
