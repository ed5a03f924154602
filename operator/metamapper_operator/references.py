"""Resolving what a spec only names: Secrets holding the broker URL and credentials.

Resolution is the one place a spec is checked against the cluster. What the worker pools
need (the broker's URL and credentials) is :func:`resolve`: a missing Secret or key, or
a URL whose scheme disagrees with the spec, becomes a :class:`SpecError` that the
reconciler reports as an InvalidSpec condition. What only an optional part needs (the
scheduler's lock URL, the result backend, Flower's basic auth) is :func:`held_parts`: a
missing one holds back that part alone (:class:`~metamapper_operator.builders.Held`),
and the pools keep running and scaling. The resolved :class:`BrokerAccess` holds
credentials, so it never prints them: every secret field is left out of ``repr`` and
:func:`redact` is what logs and status use. No message quotes a Secret's value.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from metamapper_operator.autoscale.waves import check_schedule
from metamapper_operator.builders import Held, Part
from metamapper_operator.model import (
    WORKER_TASK_TIME_LIMIT,
    CredentialsRef,
    Fleet,
    SecretKeyRef,
    SpecError,
    parse,
    transport_of,
    transport_options,
)
from metamapper_urls import URLError, in_namespace, parse_url, redact, short_tls_hosts

ReadSecret = Callable[[str, str], Awaitable[dict[str, str] | None]]


@dataclass(frozen=True, slots=True)
class RedisLayout:
    """Where kombu's Redis transport keeps a fleet's messages: the fleet's own transport
    options (``celery.settings.broker_transport_options``) or kombu's defaults."""

    key_prefix: str = ""
    priority_steps: tuple[int, ...] = (0, 3, 6, 9)
    sep: str = "\x06\x16"
    unacked_key: str = "unacked"
    unacked_index_key: str = "unacked_index"
    # An unacknowledged message delivered longer ago than this is not counted as in
    # flight: no task runs past its hard time limit, so its worker is gone (OOM kill,
    # node loss) and the message waits for the visibility timeout to be restored.
    in_flight_max_age: float = float(WORKER_TASK_TIME_LIMIT)

    @classmethod
    def of(cls, fleet: Fleet) -> RedisLayout:
        """The fleet's layout (the model has checked the types of the options it reads)."""
        settings = fleet.celery_settings
        options = transport_options(settings)
        defaults = cls()
        limit = settings.get("task_time_limit") or WORKER_TASK_TIME_LIMIT
        visibility = options.get("visibility_timeout") or limit
        return cls(
            key_prefix=fleet.broker.redis_key_prefix or options.get("global_keyprefix", ""),
            priority_steps=tuple(options.get("priority_steps", defaults.priority_steps)),
            sep=options.get("sep", defaults.sep),
            unacked_key=options.get("unacked_key", defaults.unacked_key),
            unacked_index_key=options.get("unacked_index_key", defaults.unacked_index_key),
            in_flight_max_age=min(float(limit), float(visibility)))


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerAccess:
    """How the autoscaler reaches one fleet's broker. Equal access = one broker."""

    transport: str
    url: str = field(repr=False)
    written_url: str | None = field(default=None, repr=False)
    """The URL as the Secret or spec writes it, when :attr:`url` names its short host in
    the fleet's namespace (``metamapper_urls.in_namespace``); None when they are one."""
    redis: RedisLayout = RedisLayout()
    management_url: str | None = None
    written_management_url: str | None = None
    management_user: str | None = field(default=None, repr=False)
    management_password: str | None = field(default=None, repr=False)
    region: str | None = None
    queue_name_prefix: str = ""
    aws_access_key_id: str | None = field(default=None, repr=False)
    aws_secret_access_key: str | None = field(default=None, repr=False)

    @property
    def display(self) -> str:
        return redact(self.url)


async def _secret_value(read: ReadSecret, namespace: str, ref: SecretKeyRef, where: str) -> str:
    data = await read(namespace, ref.name)
    if data is None:
        raise SpecError(where, f"Secret {ref.name!r} not found in namespace {namespace!r}")
    if ref.key not in data:
        raise SpecError(where, f"Secret {ref.name!r} has no key {ref.key!r}")
    return data[ref.key]


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    """A user name and a password (or an access key id and a secret access key)."""

    user: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


async def _credentials(read: ReadSecret, namespace: str, ref: CredentialsRef | None,
                       where: str) -> Credentials:
    if ref is None:
        return Credentials()
    return Credentials(user=await _secret_value(read, namespace, ref.user, where),
                       password=await _secret_value(read, namespace, ref.password, where))


class SecretRefused(SpecError):
    """The spec reads, but the Secrets it names do not (missing, a key missing, a URL
    that disagrees with the spec): unlike the spec's own faults, this may pass without
    an edit of the object, once the Secret is created or changed."""


@dataclass(frozen=True, slots=True)
class SpecRead:
    """A spec the operator can act on: its fleet and the broker its pools use."""

    fleet: Fleet
    access: BrokerAccess


async def read_spec(body: Mapping[str, Any], read: ReadSecret, home: str | None = None
                    ) -> SpecRead:
    """Everything a reconcile checks of an object before it acts on it: the spec parses,
    the worker can build its beat schedule (``waves.check_schedule``), the Secrets its broker needs
    resolve. The one reading of a spec, for the reconcile and for learning an object
    from kopf's index alone (``listed.Learner``), so both refuse the same specs. Raises
    :class:`SpecError` (:class:`SecretRefused` when the Secrets are at fault), and
    whatever ``read`` raises. ``home`` is the operator's own namespace (see
    :func:`resolve`)."""
    fleet = check_schedule(parse(body))
    try:
        access = await resolve(fleet, read, home)
    except SpecError as err:
        raise SecretRefused(err.field, err.message) from err
    return SpecRead(fleet, access)


async def resolve(fleet: Fleet, read: ReadSecret, home: str | None = None) -> BrokerAccess:
    """Read the Secrets the fleet names and check them; raises :class:`SpecError`.

    A short host in the broker's URLs (``redis``) is what the fleet's pods resolve in the
    fleet's namespace; the operator, in ``home``, names it there (``redis.<ns>.svc``),
    unless the fleet is in ``home`` (the short name already means the same Service) or the
    URL is a TLS one (see ``metamapper_urls.in_namespace``). The URL as written is kept
    beside it: the probe falls back to it when the longer name does not resolve."""
    broker, ns = fleet.broker, fleet.namespace
    if broker.url_secret is not None:
        ref = broker.url_secret
        url = (await _secret_value(read, ns, ref, "spec.broker.urlSecretRef")).strip()
        try:
            transport = transport_of(url)
        except SpecError:  # its message would quote the value: none of it is shown
            raise SpecError("spec.broker.urlSecretRef", f"the value of key {ref.key!r} in "
                            f"Secret {ref.name!r} is not a broker URL a client can use (one "
                            "or more of redis://, rediss://, amqp://, amqps://, pyamqp://, "
                            "sqs:// joined by ';', a numeric port, no white space); the "
                            "value is not shown") from None
        if broker.transport and broker.transport != transport:
            raise SpecError("spec.broker.transport", f"{broker.transport!r} does not match the "
                            f"scheme of the URL in Secret {ref.name!r}")
    else:
        url, transport = str(broker.url), str(broker.transport)
    if broker.rabbitmq_management_url:
        try:
            parse_url(broker.rabbitmq_management_url)
        except URLError as err:
            raise SpecError("spec.broker.rabbitmq.managementURL", str(err)) from None
    management = await _credentials(read, ns, broker.rabbitmq_credentials,
                                    "spec.broker.rabbitmq.credentialsSecretRef")
    if broker.rabbitmq_management_url and management.user is None:
        parsed = parse_url(url)
        management = Credentials(user=parsed.username, password=parsed.password)
    aws = await _credentials(read, ns, broker.sqs_credentials,
                             "spec.broker.sqs.credentialsSecretRef")
    management_url = broker.rabbitmq_management_url
    seen_url, seen_management = _seen(url, ns, home), _seen(management_url, ns, home)
    return BrokerAccess(
        transport=transport, url=seen_url or url, written_url=seen_url and url,
        redis=RedisLayout.of(fleet) if transport == "redis" else RedisLayout(),
        management_url=seen_management or management_url,
        written_management_url=seen_management and management_url,
        management_user=management.user,
        management_password=management.password, region=broker.sqs_region,
        queue_name_prefix=broker.sqs_queue_name_prefix,
        aws_access_key_id=aws.user, aws_secret_access_key=aws.password,
    )


def short_tls_notice(fleet: Fleet, access: BrokerAccess, home: str | None) -> str | None:
    """Why the operator may not reach a TLS broker named by a short host, for a fleet
    outside ``home``; None when there is nothing to say. Its certificate is checked
    against the host as written, so :func:`resolve` cannot name it in the fleet's
    namespace. Names hosts, never a URL (it may hold credentials)."""
    if fleet.namespace == home:
        return None
    hosts = sorted({host for url in (access.url, access.management_url) if url
                    for host in short_tls_hosts(url)})
    if not hosts:
        return None
    full = ", ".join(f"{host}.{fleet.namespace}.svc" for host in hosts)
    return (f"the broker's TLS URL names {', '.join(hosts)} by a short name, which the "
            f"operator looks up in its own namespace ({home or 'none: outside a cluster'}), "
            f"not in {fleet.namespace!r}, since the certificate is checked against the "
            f"name as written; write {full} in the URL (and in the certificate)")


def _seen(url: str | None, namespace: str, home: str | None) -> str | None:
    """``url`` as the operator names it from ``home`` (its short hosts in ``namespace``),
    None when that is the URL as written."""
    if url is None or namespace == home:
        return None
    seen = in_namespace(url, namespace)
    return None if seen == url else seen


# What each optional part does while its Secret is missing.
HELD_MEANWHILE = {Part.SCHEDULER: "the scheduler is held back",
                  Part.RESULT_BACKEND: "the pods run without a result backend",
                  Part.FLOWER: "Flower is not deployed"}


async def held_parts(fleet: Fleet, read: ReadSecret) -> tuple[Held, ...]:
    """The optional parts whose Secret or key is missing, each held back alone."""
    scheduler, flower = fleet.scheduler, fleet.flower
    optional = (
        (Part.SCHEDULER, "spec.scheduler.lock.redisURLSecretRef",
         scheduler.lock.redis_url_secret if scheduler.enabled else None),
        (Part.RESULT_BACKEND, "spec.celery.resultBackendSecretRef", fleet.result_backend_secret),
        (Part.FLOWER, "spec.flower.basicAuthSecretRef",
         flower.basic_auth_secret if flower.enabled else None))
    held = []
    for part, where, ref in optional:
        if ref is None:
            continue
        try:
            await _secret_value(read, fleet.namespace, ref, where)
        except SpecError as err:
            held.append(Held(part, f"{err}: {HELD_MEANWHILE[part]}; the worker pools run"))
    return tuple(held)


class NotCached(LookupError):
    """A Secret not read within the cache's time-to-live (:meth:`SecretCache.cached`)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(namespace, name)
        self.secret = (namespace, name)


@dataclass(frozen=True, slots=True)
class _CachedSecret:
    read_at: float
    data: dict[str, str] = field(repr=False)


class SecretCache:
    """Secret reads with a time-to-live, so periodic resyncs do not read every time.

    A missing Secret is not cached: the object waiting for it recovers on the next
    resync after it is created. Entries not read again within the time-to-live are
    dropped (swept at most once per time-to-live), so the cache holds only the Secrets
    that objects still use.
    """

    def __init__(self, read: ReadSecret, ttl: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._read, self._ttl, self._clock = read, ttl, clock
        self._entries: dict[tuple[str, str], _CachedSecret] = {}
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._entries)

    def _sweep(self, now: float) -> None:
        if now - self._swept < self._ttl:
            return
        self._swept = now
        for key in [k for k, entry in self._entries.items()
                    if now - entry.read_at >= self._ttl]:
            del self._entries[key]

    def _fresh(self, key: tuple[str, str]) -> _CachedSecret | None:
        entry = self._entries.get(key)
        return entry if entry is not None and self._clock() - entry.read_at < self._ttl else None

    def holds(self, namespace: str, name: str) -> bool:
        """Whether the Secret was read within the time-to-live."""
        return self._fresh((namespace, name)) is not None

    async def read(self, namespace: str, name: str) -> dict[str, str] | None:
        key = (namespace, name)
        self._sweep(self._clock())
        if (entry := self._fresh(key)) is not None:
            return entry.data
        value = await self._read(namespace, name)
        if value is not None:
            self._entries[key] = _CachedSecret(self._clock(), value)
        return value

    async def cached(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret as read within the time-to-live, without a request (a
        :data:`ReadSecret` that never waits); raises :class:`NotCached` otherwise."""
        if (entry := self._fresh((namespace, name))) is None:
            raise NotCached(namespace, name)
        return entry.data

    def forget(self, namespace: str) -> None:
        """Drop a namespace's entries: a spec change re-reads its Secrets at once."""
        for key in [k for k in self._entries if k[0] == namespace]:
            del self._entries[key]
