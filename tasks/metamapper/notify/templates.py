"""Metamapper's e-mails: a plain-text and an HTML body for each, by namespace/template.

The names and the variables each template receives are upstream's (the web app sends
them as ``template_dict``); the wording is this project's. The HTML bodies share one
layout and are autoescaped; ``domain`` and ``now`` are added by :func:`mail.deliver`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2

from metamapper.notify.errors import DeliveryError

LAYOUT = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"></head>
<body style="font-family: Arial, Helvetica, sans-serif; background: #f5f5f5; padding: 20px;">
<div style="max-width: 480px; margin: 0 auto; background: #ffffff; padding: 18px;
 font-size: 14px; line-height: 21px; color: #000000;">
{% block content %}{% endblock %}
</div>
<p style="text-align: center; font-size: 12px; color: #999999;">Metamapper, {{ now.year }}</p>
</body></html>
"""

# (text, html) per "namespace/template".
BODIES: dict[str, tuple[str, str]] = {
    "authentication/reset_password": (
        "A password reset was asked for your Metamapper account ({{ email }}).\n\n"
        "Choose a new password here: {{ domain }}/password/confirm/{{ uid }}/{{ token }}\n\n"
        "If you did not ask for it, ignore this message.\n",
        "<p>A password reset was asked for your Metamapper account (<b>{{ email }}</b>).</p>"
        '<p><a href="{{ domain }}/password/confirm/{{ uid }}/{{ token }}">'
        "Choose a new password</a></p>"
        "<p>If you did not ask for it, ignore this message.</p>",
    ),
    "authentication/password_was_reset": (
        "The password of your Metamapper account ({{ to_address }}) has just been changed.\n"
        "If you did not change it, tell your administrator now.\n",
        "<p>The password of your Metamapper account (<b>{{ to_address }}</b>) has just been"
        " changed.</p><p>If you did not change it, tell your administrator now.</p>",
    ),
    "authorization/membership_granted": (
        "You ({{ to_address }}) now have the {{ permissions }} role in the"
        " {{ workspace_name }} workspace.\n\nSign in: {{ domain }}/login\n\n"
        "{% if user_exists %}Use the Metamapper account of this address."
        "{% else %}Create a Metamapper account with this address to sign in.{% endif %}\n",
        "<p>You ({{ to_address }}) now have the <b>{{ permissions }}</b> role in the"
        " <b>{{ workspace_name }}</b> workspace.</p>"
        '<p><a href="{{ domain }}/login?email={{ to_address | urlencode }}">Sign in</a></p>'
        "<p>{% if user_exists %}Use the Metamapper account of this address."
        "{% else %}Create a Metamapper account with this address to sign in.{% endif %}</p>",
    ),
    "authorization/membership_revoked": (
        "You ({{ to_address }}) no longer have access to the {{ workspace_name }} workspace.\n"
        "If this is a mistake, ask your administrator.\n",
        "<p>You ({{ to_address }}) no longer have access to the <b>{{ workspace_name }}</b>"
        " workspace.</p><p>If this is a mistake, ask your administrator.</p>",
    ),
    "checks/check_failed": (
        "The check {{ check_name }} failed in the workspace {{ workspace_slug }}:\n\n"
        "    {{ check_error }}\n\nIts executions: {{ check_url }}\n",
        "<p>The check <b>{{ check_name }}</b> failed in the workspace"
        " <b>{{ workspace_slug }}</b>:</p>"
        '<p style="padding: 12px; background-color: #f8f9fa;">{{ check_error }}</p>'
        '<p><a href="{{ check_url }}">See its executions in Metamapper</a></p>',
    ),
    "definitions/datastore_sync_failure": (
        "The datastore {{ datastore_name }} could not be synced in the workspace"
        " {{ workspace_slug }}.\n\nIts runs and their errors:"
        " {{ domain }}/{{ workspace_slug }}/datastores/{{ datastore_slug }}/runs\n",
        "<p>The datastore <b>{{ datastore_name }}</b> could not be synced in the workspace"
        " <b>{{ workspace_slug }}</b>.</p>"
        '<p><a href="{{ domain }}/{{ workspace_slug }}/datastores/{{ datastore_slug }}/runs">'
        "See its runs and their errors</a></p>",
    ),
}


def _sources() -> dict[str, str]:
    sources = {"layout.html": LAYOUT}
    for name, (text, html) in BODIES.items():
        sources[f"{name}.txt"] = text
        sources[f"{name}.html"] = (
            '{% extends "layout.html" %}{% block content %}' + html + "{% endblock %}"
        )
    return sources


ENVIRONMENT = jinja2.Environment(
    loader=jinja2.DictLoader(_sources()),
    autoescape=jinja2.select_autoescape(["html"]),
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str


def render(namespace: str, template: str, context: Mapping[str, Any]) -> Rendered:
    """The two bodies of ``namespace/template``; :class:`DeliveryError` if there is none."""
    name = f"{namespace}/{template}"
    if name not in BODIES:
        raise DeliveryError(f"e-mail: no template {name!r}")
    return Rendered(
        text=ENVIRONMENT.get_template(f"{name}.txt").render(context),
        html=ENVIRONMENT.get_template(f"{name}.html").render(context),
    )
