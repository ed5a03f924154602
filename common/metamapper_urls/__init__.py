"""URLs with credentials: the one reader and the one redactor, for the operator and the
worker alike (pure, no I/O).

Both packages read broker and database URLs and both must keep their credentials out of
everything they show; they may not import each other, so this small package is what they
share. :func:`parse_url` decodes user names and passwords (as kombu and the database
drivers do, so a password with ``@``, ``/`` or ``%`` works everywhere) and checks the
port (a port no client can cast is an error naming the URL, not a crash at connect
time). :func:`redact`, :func:`redact_text` and :func:`secrets_in` know every place a URL
may carry a credential: the password, a ``?password=``-style query parameter (redis-py
accepts one), and the SQS access key id in the user name. Every mask is :data:`REDACTED`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

REDACTED = "***"
#: Query parameters whose value is a credential.
SECRET_PARAMETERS = frozenset({"password", "passwd", "pass", "secret", "token",
                               "aws_secret_access_key", "aws_access_key_id",
                               "sasl_password"})
#: Schemes whose user name is itself a credential (an AWS access key id).
SECRET_USER_SCHEMES = frozenset({"sqs"})

# A URL inside free text: a scheme, "://", and everything up to white space or a double
# quote (a password may hold a single quote, RFC 3986 allows it in the user info).
_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"<>]+")
# The ";" between the URLs of a failover list (kombu's "redis://a;redis://b"): one before
# another scheme, so a ";" inside a password does not split its URL.
_FAILOVER = re.compile(r";(?=[a-zA-Z][a-zA-Z0-9+.-]*://)")
# What looks like "user:password@" right after a scheme, for text urlsplit cannot read.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@")


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
    try:
        parts = urlsplit(url.strip())
    except ValueError as err:  # urlsplit's reasons name no part of the URL
        raise URLError(f"{redact(url)!r} is not a URL: {err}") from None
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


def redact(url: str) -> str:
    """``url`` with every credential replaced by :data:`REDACTED`: the password, secret
    query parameters, and the user name where it is a key id (SQS); in every URL of a
    failover list."""
    failover = alternates(url)
    if len(failover) > 1:
        return ";".join(redact(alternate) for alternate in failover)
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # not a well-formed URL: mask whatever looks like a password
        return _mask_userinfo(url)
    secret_user = parts.scheme in SECRET_USER_SCHEMES and user
    if password is None and not secret_user and not _secret_query(parts.query):
        return url
    netloc = _netloc(parts, REDACTED if secret_user else user,
                     None if password is None else REDACTED)
    query = urlencode([(k, REDACTED if k.lower() in SECRET_PARAMETERS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)],
                      safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def alternates(url: str) -> list[str]:
    """The URLs of a ``;``-separated failover list (kombu's), or ``[url]``."""
    return _FAILOVER.split(url)


def has_credentials(url: str) -> bool:
    """Whether ``url`` (or any URL of a ``;``-separated failover list) carries a
    credential: a password, a secret query parameter, or a user name that is a key id."""
    return redact(url) != url


def without_credentials(url: str) -> str:
    """``url`` with no user name, password, query or fragment: the address alone, for a
    client that sends the credentials another way (an Authorization header)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=_netloc(parts, None, None), query="", fragment=""))


#: Schemes whose client checks the server's certificate against the host as written: a
#: rewritten host would be checked instead, and a certificate for the short name fails.
TLS_SCHEMES = frozenset({"rediss", "amqps", "https"})


@dataclass(frozen=True, slots=True)
class _HostSpan:
    """Where a URL's host is: ``url[:start]`` before it, ``url[end:]`` after it."""

    host: str
    start: int
    end: int


def _host_span(url: str) -> _HostSpan | None:
    """The host of one URL (not a failover list), None when it has none."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    head = f"{parts.scheme}://"
    if not parts.netloc or not url.startswith(head + parts.netloc):
        return None
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host = hostport.partition(":")[0]
    if not host:
        return None
    start = len(head) + len(userinfo) + len(at)
    return _HostSpan(host, start, start + len(host))


def hosts_of(url: str) -> tuple[str, ...]:
    """The host of every URL of a failover list, in order (a URL without one adds none)."""
    spans = (_host_span(alternate) for alternate in alternates(url))
    return tuple(span.host for span in spans if span is not None)


def in_namespace(url: str, namespace: str) -> str:
    """``url`` with a single-label host (a Service's short name, ``redis``) named as a pod
    of ``namespace`` resolves it, ``redis.<namespace>.svc``, in every URL of a failover
    list. Left as written: every other host (dotted, an IP address, all digits as
    ``getaddrinfo`` reads ``2130706433``, ``localhost``), every URL whose client checks a
    certificate against the host (:data:`TLS_SCHEMES`), and everything else in the URL.

    A pod's resolver tries its own namespace first, so the fleet's pods find ``redis`` in
    the fleet's namespace; the operator, in a namespace of its own, would look for it in
    that one. ``<name>.<namespace>.svc`` is what every pod resolves the same way, whatever
    the cluster's domain. The caller keeps the URL as written too: ``redis`` may be no
    Service at all but a name the node's search domains or ``/etc/hosts`` resolve.
    """
    failover = alternates(url)
    if len(failover) > 1:
        return ";".join(in_namespace(alternate, namespace) for alternate in failover)
    span = _host_span(url)
    if span is None or _is_tls(url, span) or not _is_short(span.host):
        return url
    return f"{url[:span.start]}{span.host}.{namespace}.svc{url[span.end:]}"


def short_tls_hosts(url: str) -> tuple[str, ...]:
    """The short hosts of the TLS URLs of a failover list: those :func:`in_namespace`
    leaves as written although a pod of another namespace resolves them elsewhere."""
    spans = ((alternate, _host_span(alternate)) for alternate in alternates(url))
    return tuple(span.host for alternate, span in spans
                 if span is not None and _is_tls(alternate, span) and _is_short(span.host))


def _is_tls(url: str, span: _HostSpan) -> bool:
    return url[:span.start].split(":", 1)[0] in TLS_SCHEMES


def _is_short(host: str) -> bool:
    """A single-label name (a Service's short name): not dotted, no IP address (also all
    digits, as ``getaddrinfo`` reads ``2130706433``), not ``localhost``."""
    return not ("." in host or host.startswith("[") or host.isdigit()
                or host.lower() == "localhost")


def redact_text(text: str) -> str:
    """``text`` (an error message, a log line) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact(match[0]), text)


def secrets_in(url: str) -> list[str]:
    """Every credential in ``url`` (each URL of a failover list), in each spelling an
    error message may show it, and the URL itself."""
    failover = alternates(url)
    if len(failover) > 1:
        return [url, *(secret for alternate in failover for secret in secrets_in(alternate))]
    try:
        parts = urlsplit(url)
        raw = [parts.password, *_secret_query(parts.query)]
    except ValueError:
        return [url] if url else []
    if parts.scheme in SECRET_USER_SCHEMES:
        raw.append(parts.username)
    found = [url]
    for value in filter(None, raw):
        found += [value, unquote(value), quote(unquote(value), safe="")]
    return [value for value in found if value]


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by :data:`REDACTED` (longest first,
    so a URL goes whole), and every URL left in it redacted."""
    for secret in sorted(set(filter(None, secrets)), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)


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


def _secret_query(query: str) -> list[str]:
    return [v for k, v in parse_qsl(query, keep_blank_values=True)
            if k.lower() in SECRET_PARAMETERS and v]


def _mask_userinfo(text: str) -> str:
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
