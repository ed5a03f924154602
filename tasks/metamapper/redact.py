"""Keep passwords out of output: every URL shown or logged goes through :func:`redact_url`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_MASK = "****"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@")


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``****``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
    except ValueError:  # not a well-formed URL: mask whatever looks like a password
        return redact_text(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{_MASK}@{host}"))


def redact_text(text: str) -> str:
    """``text`` with the password of every URL inside it masked (for error messages)."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
