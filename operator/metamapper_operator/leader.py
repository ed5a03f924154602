"""Leader election on a ``coordination.k8s.io`` Lease: exactly one operator process acts.

The way controller-runtime and client-go elect a leader: every candidate reads one named
Lease; the holder renews it every retry period; a candidate takes it over once it has seen
the same record, unrenewed, for the lease duration (measured on its own clock, so clocks
need not agree). A process does no work before it holds the Lease (the operator only
starts once :meth:`LeaseElector.acquire` returns), and stops acting as soon as it can no
longer be sure it holds it: when a renewal shows another holder, or when no renewal
succeeded for the renew deadline (shorter than the lease duration, so it stops before
anyone may take over). Stopping is ending the process (:func:`exit_lost`), which drops
every piece of in-memory state at once; the Deployment restarts it as a standby.

The renew deadline is also checked before each of the operator's own writes
(:meth:`LeaseElector.check`), on SIGCONT (a process that was stopped past its lease must
not write a single request when it resumes) and by a watchdog thread (an event loop that
is blocked cannot run the renewal, nor notice it missed it).

Fencing: a check only says that a write may *start*. Between the renew deadline and the
lease duration lies the margin in which a write that started in time must end, because a
standby may act from the lease duration on. So :meth:`LeaseElector.check` gives the seconds
left until then and the operator's own writes take no longer (their client-side timeout);
kopf's requests, which pass no check, get :attr:`LeaseSettings.write_budget` as their
timeout: the watchdog ends the process within one watchdog period after the deadline, so a
request kopf starts while the process lives ends before the lease duration. A standby
judges expiry by the duration the Lease itself states (``spec.leaseDurationSeconds``, the
holder's), not by its own setting.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from metamapper_operator.kube import TRANSPORT_ERRORS, KubeError

log = logging.getLogger(__name__)

# The exit status of a process that lost (or could not keep) its leadership.
EXIT_LOST = 3


def identity(hostname: str | None = None) -> str:
    """This process's name as a Lease holder: the pod name (HOSTNAME) and a random suffix,
    so that a restarted container in the same pod is a new holder, as in client-go."""
    host = hostname or os.environ.get("HOSTNAME") or "metamapper-operator"
    return f"{host}_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, kw_only=True)
class LeaseSettings:
    """Where the Lease is and its timing (client-go's defaults: 15 s, 10 s, 2 s)."""

    namespace: str
    name: str
    identity: str
    duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError("lease timing needs 0 < retry period < renew deadline < duration")
        if self.write_budget <= 0:
            raise ValueError("lease timing needs duration - renew deadline > retry period / 4")

    @property
    def watchdog_period(self) -> float:
        """How often the watchdog thread checks the renew deadline."""
        return self.retry_period / 4

    @property
    def write_budget(self) -> float:
        """The longest a request that passed no check may take (kopf's): it may start up to
        one watchdog period after the renew deadline and must end by the lease duration."""
        return self.duration - self.renew_deadline - self.watchdog_period

    @property
    def stated_duration(self) -> int:
        """The duration written in the Lease, whole seconds, never below ours (standbys
        wait for it, so rounding up keeps the fencing margin)."""
        return max(1, math.ceil(self.duration))


@dataclass(frozen=True)
class Holding:
    """A Lease's holder and renewal as read from the apiserver."""

    holder: str | None
    renew_time: datetime.datetime | None
    transitions: int
    duration: float | None
    """The holder's lease duration (``spec.leaseDurationSeconds``), when stated."""


def expired(seen: Holding, seen_since: float, now: float, duration: float) -> bool:
    """Whether a candidate may take a Lease it has seen unchanged since ``seen_since``:
    after the duration the Lease states (the holder's), ``duration`` when it states none."""
    wait = seen.duration if seen.duration is not None else duration
    return seen.holder is None or now - seen_since >= wait


def exit_lost(reason: str) -> None:
    """End the process at once: no task gets to run (and write) after this."""
    log.critical("leadership lost: %s; exiting so that a standby takes over", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_LOST)


@dataclass
class LeaseElector:
    settings: LeaseSettings
    api: client.CoordinationV1Api
    lost: Callable[[str], None] = exit_lost
    clock: Callable[[], float] = time.monotonic
    # Monotonic time until which this process may start a write; 0 while it is a standby.
    valid_until: float = 0.0
    # Monotonic time from which a standby may act: every write must have ended by then.
    fenced_at: float = 0.0
    _seen: Holding | None = field(default=None, repr=False)
    _seen_since: float = field(default=0.0, repr=False)
    _leading: bool = field(default=False, repr=False)

    # --- the one place that reads and writes the Lease ------------------------------

    def _body(self, transitions: int, acquired: datetime.datetime | None,
              resource_version: str | None) -> client.V1Lease:
        now = datetime.datetime.now(datetime.UTC)
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.settings.name,
                                         namespace=self.settings.namespace,
                                         resource_version=resource_version),
            spec=client.V1LeaseSpec(
                holder_identity=self.settings.identity,
                lease_duration_seconds=self.settings.stated_duration,
                acquire_time=acquired or now, renew_time=now,
                lease_transitions=transitions))

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        s = self.settings
        started = self.clock()
        timeout = s.renew_deadline / 2
        try:
            lease = await self.api.read_namespaced_lease(s.name, s.namespace,
                                                         _request_timeout=timeout)
        except ApiException as err:
            if err.status != 404:
                raise
            await self.api.create_namespaced_lease(s.namespace, self._body(0, None, None),
                                                   _request_timeout=timeout)
            self._granted(started)
            return True
        spec = lease.spec
        seen = Holding(spec.holder_identity or None, spec.renew_time,
                       int(spec.lease_transitions or 0),
                       float(spec.lease_duration_seconds) if spec.lease_duration_seconds
                       else None)
        if seen != self._seen:
            self._seen, self._seen_since = seen, self.clock()
        if seen.holder == s.identity:
            body = self._body(seen.transitions, spec.acquire_time,
                              lease.metadata.resource_version)
        elif self._leading:
            self.lost(f"the Lease is held by {seen.holder}")
            return False
        elif expired(seen, self._seen_since, self.clock(), s.duration):
            body = self._body(seen.transitions + 1, None, lease.metadata.resource_version)
        else:
            return False
        # resourceVersion makes this a compare-and-swap: of two candidates, one wins.
        await self.api.replace_namespaced_lease(s.name, s.namespace, body,
                                                _request_timeout=timeout)
        self._granted(started)
        return True

    def _granted(self, started: float) -> None:
        if not self._leading:
            log.info("leading as %s (Lease %s/%s)", self.settings.identity,
                     self.settings.namespace, self.settings.name)
        self._leading = True
        # Measured from before the request: others see the renewal no earlier than that.
        self.valid_until = started + self.settings.renew_deadline
        self.fenced_at = started + self.settings.duration

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except (ApiException, *TRANSPORT_ERRORS) as err:
            log.warning("%s", KubeError(
                f"Lease {self.settings.namespace}/{self.settings.name}", err))
            return False

    # --- the life cycle ---------------------------------------------------------------

    async def acquire(self) -> None:
        """Wait, as a standby, until this process holds the Lease."""
        log.info("standing by for Lease %s/%s as %s", self.settings.namespace,
                 self.settings.name, self.settings.identity)
        while not await self._attempt():
            await asyncio.sleep(self.settings.retry_period)

    async def renew_forever(self) -> None:
        """Keep the Lease; :meth:`check` ends the process once the renew deadline passes."""
        while True:
            await asyncio.sleep(self.settings.retry_period)
            self.check()
            await self._attempt()

    def check(self) -> float:
        """Called before every write: stop here unless the Lease is surely still ours.

        Returns the seconds the write may take: it must end before a standby may act.
        """
        now = self.clock()
        if self._leading and now >= self.valid_until:
            self.lost(f"not renewed within {self.settings.renew_deadline:g} s")
        return self.fenced_at - now

    async def release(self) -> None:
        """On a clean shutdown, hand the Lease over at once instead of letting it expire."""
        if not self._leading or self.clock() >= self.valid_until:
            return
        s = self.settings
        try:
            lease = await self.api.read_namespaced_lease(s.name, s.namespace,
                                                         _request_timeout=s.retry_period)
            if lease.spec.holder_identity != s.identity:
                return
            lease.spec.holder_identity = None  # type: ignore[assignment]  # optional in the API
            lease.spec.lease_duration_seconds = 1
            await self.api.replace_namespaced_lease(s.name, s.namespace, lease,
                                                    _request_timeout=s.retry_period)
            log.info("released Lease %s/%s", s.namespace, s.name)
        except (ApiException, *TRANSPORT_ERRORS) as err:
            log.warning("could not release %s", KubeError(f"Lease {s.namespace}/{s.name}", err))
        # A standby may act at once now: no write may start after this.
        self._leading = False
        self.valid_until = self.fenced_at = 0.0

    def fence(self) -> None:
        """Check the deadline on SIGCONT and from a watchdog thread (see the module doc)."""
        signal.signal(signal.SIGCONT, lambda *_: self.check())

        def watchdog() -> None:
            while True:
                time.sleep(self.settings.retry_period / 4)
                self.check()

        threading.Thread(target=watchdog, name="lease-watchdog", daemon=True).start()
