"""The one reader of broker and management URLs in the operator (pure, no I/O).

Every part that reaches a client library or a message goes through :func:`parse_url`:
user names and passwords percent-decoded (as kombu decodes them, so a password with
``@``, ``/`` or ``%`` works everywhere), the port checked (a port redis-py cannot cast
is a spec error, not a crash at connect time), and :func:`redact` / :func:`secrets_in`
know every place a URL may carry a credential: the password, a ``?password=``-style
query parameter (redis-py accepts one), and the SQS access key id in the user name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "***"
# Query parameters whose value is a credential.
SECRET_PARAMETERS = frozenset({"password", "passwd", "pass", "secret", "token",
                               "aws_secret_access_key", "aws_access_key_id",
                               "sasl_password"})
# Schemes whose user name is itself a credential (an AWS access key id).
SECRET_USER_SCHEMES = frozenset({"sqs"})


class URLError(ValueError):
    """A URL no client could use; the message never contains its credentials."""


@dataclass(frozen=True)
class ParsedURL:
    """A URL's parts, decoded."""

    scheme: str
    host: str | None
    port: int | None
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    path: str  # without the leading "/", decoded
    query: Mapping[str, str] = field(repr=False)


def parse_url(url: str) -> ParsedURL:
    """Parse ``url``; raises :class:`URLError` naming what is wrong (not the secret)."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        raise URLError(f"the port of {redact(url)!r} is not a number from 0 to 65535"
                       ) from None
    return ParsedURL(
        scheme=parts.scheme, host=parts.hostname, port=port,
        username=None if parts.username is None else unquote(parts.username),
        password=None if parts.password is None else unquote(parts.password),
        path=unquote(parts.path[1:]), query=dict(parse_qsl(parts.query)))


def _netloc(parts: SplitResult, user: str | None, password: str | None) -> str:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    try:
        port: int | str | None = parts.port
    except ValueError:  # shown as written; it holds no secret
        port = parts.netloc.rpartition(":")[2]
    if port:
        host = f"{host}:{port}"
    if user is None and password is None:
        return host
    return f"{user or ''}{':' + password if password is not None else ''}@{host}"


def redact(url: str) -> str:
    """``url`` with every credential replaced by ``***``: the password, secret query
    parameters, and the user name where it is a key id (SQS)."""
    parts = urlsplit(url)
    user, password = parts.username, parts.password
    secret_user = parts.scheme in SECRET_USER_SCHEMES and user
    if password is None and not secret_user and not _secret_query(parts.query):
        return url
    netloc = _netloc(parts, REDACTED if secret_user else user,
                     None if password is None else REDACTED)
    query = urlencode([(k, REDACTED if k.lower() in SECRET_PARAMETERS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                      safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret_query(query: str) -> list[str]:
    return [v for k, v in parse_qsl(query, keep_blank_values=True)
            if k.lower() in SECRET_PARAMETERS and v]


def secrets_in(url: str) -> list[str]:
    """Every credential in ``url``, in each spelling an error message may show it."""
    parts = urlsplit(url)
    raw = [parts.password, *_secret_query(parts.query)]
    if parts.scheme in SECRET_USER_SCHEMES:
        raw.append(parts.username)
    found = [url]
    for value in filter(None, raw):
        found += [value, unquote(value), quote(unquote(value), safe="")]
    return [value for value in found if value]
