"""Connection URLs: which engine a URL is for, and where a SQLite URL points."""

from __future__ import annotations

from urllib.parse import urlsplit

#: URL scheme -> engine name, for datastores and the metastore.
ENGINES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
    "sqlite": "sqlite",
}


def engine_of(url: str) -> str:
    """The engine of ``url``; ``ValueError`` for an unsupported scheme."""
    scheme = urlsplit(url).scheme.split("+")[0].lower()
    try:
        return ENGINES[scheme]
    except KeyError:
        supported = ", ".join(sorted(ENGINES))
        raise ValueError(f"unsupported URL scheme {scheme!r} (supported: {supported})") from None


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError("a SQLite URL looks like sqlite:///relative/path.db or sqlite:////abs.db")
    return url[len(prefix):]
