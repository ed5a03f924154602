"""Connection URLs: which engine a URL is for."""

from __future__ import annotations

from urllib.parse import urlsplit

#: URL scheme -> engine name, for datastores.
ENGINES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def engine_of(url: str) -> str:
    """The engine of ``url``; ``ValueError`` for an unsupported scheme."""
    scheme = urlsplit(url).scheme.split("+")[0].lower()
    try:
        return ENGINES[scheme]
    except KeyError:
        supported = ", ".join(sorted(ENGINES))
        raise ValueError(f"unsupported URL scheme {scheme!r} (supported: {supported})") from None

