"""One JSON POST, for the webhook and events senders (the standard library's client)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from metamapper.notify.errors import DeliveryError

TIMEOUT_SECONDS = 30.0


def post_json(channel: str, url: str, body: Mapping[str, Any],
              headers: Mapping[str, str] | None = None,
              timeout: float = TIMEOUT_SECONDS) -> bytes:
    """POST ``body`` as JSON to ``url``; the response's body, or :class:`DeliveryError`.

    ``channel`` names the service in the error; the URL never appears in it, since a
    webhook's URL is its credential.
    """
    if not url.startswith(("https://", "http://")):
        raise DeliveryError(f"{channel}: the target is not an http(s) URL")
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: bytes = response.read()
            return answer
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{channel} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"{channel} could not be reached: {_why(exc)}") from None


def _why(exc: OSError) -> str:
    """The operating system's words for a failed connection (they never hold the URL)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__
