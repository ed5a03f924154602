"""The one interface every queue-depth probe implements, and its error.

A probe measures every queue it is given in one call, so the autoscaler can group all
pools that share a broker and pay for one measurement per broker per polling interval.
A probe keeps its connection open between calls and opens a new one after an error;
every call is bounded by a timeout.

A measurement degrades per queue: a queue the broker refuses to measure (a Redis key of
another type, a name the broker can never hold) is left out of the answer and named in
``failed`` with the reason, while every other queue is measured in the same round
trip(s). Only a broker that cannot be measured at all raises :class:`ProbeError`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from metamapper_operator.references import BrokerAccess
from metamapper_urls import redact, scrub, secrets_in

#: Seconds one ``measure()`` (or connecting for it) may take before it fails.
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueDepth:
    """One queue's backlog as the broker reports it."""

    waiting: int
    """Messages ready to be delivered."""
    in_flight: int | None
    """Messages delivered but not yet acknowledged; ``None`` when the probe cannot tell."""
    stale: int = 0
    """Delivered, unacknowledged messages too old to be running (not in ``in_flight``)."""
    oldest_age: float | None = field(default=None, compare=False)
    """Seconds the oldest waiting message has waited (0 when none waits); ``None`` when
    the broker cannot tell (see each probe). A reading of the clock, not a count: two
    depths with the same counts are equal whatever their ages."""


class ProbeError(Exception):
    """The broker could not be measured. The message never contains credentials."""


class Probe(Protocol):
    """A queue-depth probe for one broker."""

    @property
    def source(self) -> str:
        """How depth is measured, as ``status.pools[].backlogSource`` shows it."""
        ...
    round_trips: int
    """Network requests made by ``measure()`` so far (connection set-up not included)."""
    unconsumed: tuple[str, ...] | None
    """Queues of the broker that held messages and had no consumer at the last
    ``measure()``; None when the probe cannot tell (only RabbitMQ's management API can)."""
    @property
    def failed(self) -> Mapping[str, str]:
        """The queues of the last ``measure()`` that could not be measured -> why (scrubbed
        of credentials); they are absent from its answer. Empty when every queue was
        measured."""
        ...

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        """The depth of every queue in ``queues`` but those in ``failed``; a queue that
        does not exist is empty."""
        ...

    async def close(self) -> None:
        """Close the connection; a later ``measure()`` opens a new one."""
        ...


def secrets_of(access: BrokerAccess) -> list[str]:
    """Every credential ``access`` holds, in the spellings an error message may show.

    A URL that holds no credential is not a secret: messages may name the address."""
    found: list[str | None] = [
        secret for url in (access.url, access.management_url or "")
        for secret in secrets_in(url) if secret != url or redact(url) != url]
    found += [access.management_password, access.aws_access_key_id,
              access.aws_secret_access_key]
    return [secret for secret in found if secret]


def scrubbed(access: BrokerAccess, text: str) -> str:
    """``text`` without any credential of ``access``."""
    return scrub(text, secrets_of(access))


def probe_error(access: BrokerAccess, where: str, err: BaseException) -> ProbeError:
    """A :class:`ProbeError` for ``err`` met at ``where`` (an address), all of it scrubbed:
    a credential in ``where`` is masked like one in the error's own message."""
    detail = str(err) or "no detail"
    return ProbeError(scrubbed(access, f"{where}: {type(err).__name__}: {detail}"))
