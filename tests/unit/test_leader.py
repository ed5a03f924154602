"""Leader election's rules, on a fake Lease API (the real apiserver: tests/operator/test_ha.py).

The fake keeps one Lease with a resourceVersion and refuses a replace of an older one
(409), as the apiserver does; the clock is the test's.
"""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from metamapper_operator.leader import LeaseElector, LeaseSettings, identity


@dataclass
class FakeLeases:
    lease: client.V1Lease | None = None
    version: int = 0
    writes: list[str] = field(default_factory=list)
    stale_read: client.V1Lease | None = None  # what the next read returns, if set

    async def read_namespaced_lease(self, name: str, namespace: str, **_: object
                                    ) -> client.V1Lease:
        if self.stale_read is not None:
            stale, self.stale_read = self.stale_read, None
            return stale
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.lease)

    def _store(self, body: client.V1Lease) -> client.V1Lease:
        self.version += 1
        body.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(body)
        self.writes.append(body.spec.holder_identity)
        return body

    async def create_namespaced_lease(self, namespace: str, body: client.V1Lease,
                                      **_: object) -> client.V1Lease:
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    async def replace_namespaced_lease(self, name: str, namespace: str, body: client.V1Lease,
                                       **_: object) -> client.V1Lease:
        assert self.lease is not None
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)


@dataclass
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def elector(api: FakeLeases, clock: Clock, name: str, lost: list[str]) -> LeaseElector:
    settings = LeaseSettings(
        namespace="ops", name="lease", identity=name, duration=15, renew_deadline=10, retry_period=2
    )
    return LeaseElector(settings, api, lost=lost.append, clock=clock)  # type: ignore[arg-type]


def test_identity_is_the_pod_name_and_unique() -> None:
    first, second = identity("operator-7d9f-abcde"), identity("operator-7d9f-abcde")
    assert first.startswith("operator-7d9f-abcde_") and first != second


def test_timing_must_let_the_leader_stop_before_anyone_takes_over() -> None:
    with pytest.raises(ValueError, match="renew deadline < duration"):
        LeaseSettings(
            namespace="ops",
            name="lease",
            identity="a",
            duration=10,
            renew_deadline=10,
            retry_period=2,
        )


def test_one_leader_takeover_after_the_duration_and_the_old_one_stops() -> None:
    async def scenario() -> None:
        api, clock, lost_a, lost_b = FakeLeases(), Clock(), [], []
        a, b = elector(api, clock, "a", lost_a), elector(api, clock, "b", lost_b)
        assert await a.try_acquire_or_renew()         # creates the Lease
        assert not await b.try_acquire_or_renew()     # a standby
        clock.now += 2
        assert await a.try_acquire_or_renew()         # renewed: b sees a new record ...
        assert not await b.try_acquire_or_renew()
        clock.now += 14                               # ... then a stops (killed, paused)
        assert not await b.try_acquire_or_renew()     # 14 s unchanged: not yet
        clock.now += 1                                # 15 s unchanged, on b's own clock
        assert await b.try_acquire_or_renew()
        assert api.lease is not None and api.lease.spec.lease_transitions == 1
        # a resumes: its deadline passed long ago, so its first check ends it ...
        a.check()
        assert lost_a == ["not renewed within 10 s"]
        # ... and were it to try a renewal, it sees another holder and stops too.
        assert not await a.try_acquire_or_renew()
        assert lost_a[-1] == "the Lease is held by b" and lost_b == []
        assert api.writes == ["a", "a", "b"]

    asyncio.run(scenario())


def test_a_renewing_leader_keeps_the_lease_and_its_deadline_moves() -> None:
    async def scenario() -> None:
        api, clock, lost = FakeLeases(), Clock(), []
        a, b = elector(api, clock, "a", lost), elector(api, clock, "b", [])
        assert await a.try_acquire_or_renew()
        for _ in range(20):
            clock.now += 2
            assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()
            a.check()
        assert lost == [] and a.valid_until == clock.now + 10

    asyncio.run(scenario())


def test_of_two_candidates_racing_for_an_expired_lease_one_wins() -> None:
    async def scenario() -> None:
        api, clock = FakeLeases(), Clock()
        a = elector(api, clock, "a", [])
        b, c = elector(api, clock, "b", []), elector(api, clock, "c", [])
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew() and not await c.try_acquire_or_renew()
        clock.now += 16
        # Both read the same expired record; the second replace carries a stale version.
        before = await api.read_namespaced_lease("lease", "ops")
        assert await b.try_acquire_or_renew()
        api.stale_read = before                       # c read it before b's write landed
        with pytest.raises(ApiException) as refused:
            await c.try_acquire_or_renew()
        assert refused.value.status == 409
        assert api.writes == ["a", "b"]

    asyncio.run(scenario())


def test_release_hands_the_lease_over_at_once() -> None:
    async def scenario() -> None:
        api, clock = FakeLeases(), Clock()
        a, b = elector(api, clock, "a", []), elector(api, clock, "b", [])
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        await a.release()
        assert a.check() <= 0                         # no write of a's may start now
        assert await b.try_acquire_or_renew()         # no wait for the duration

    asyncio.run(scenario())


def test_a_standby_judges_expiry_by_the_duration_the_lease_states() -> None:
    async def scenario() -> None:
        api, clock = FakeLeases(), Clock()
        slow = LeaseSettings(namespace="ops", name="lease", identity="a", duration=30,
                             renew_deadline=20, retry_period=4)
        a = LeaseElector(slow, api, lost=[].append, clock=clock)  # type: ignore[arg-type]
        b = elector(api, clock, "b", [])                          # its own duration: 15 s
        assert await a.try_acquire_or_renew()
        assert api.lease is not None and api.lease.spec.lease_duration_seconds == 30
        assert not await b.try_acquire_or_renew()
        clock.now += 16                    # past b's 15 s, within the Lease's 30 s: a may
        assert not await b.try_acquire_or_renew()      # still be writing
        clock.now += 14
        assert await b.try_acquire_or_renew()

    asyncio.run(scenario())


def test_the_lease_states_a_duration_no_shorter_than_the_holders() -> None:
    async def scenario() -> None:
        api, clock = FakeLeases(), Clock()
        settings = LeaseSettings(namespace="ops", name="lease", identity="a", duration=6.4,
                                 renew_deadline=6.4 * 2 / 3, retry_period=6.4 * 2 / 15)
        a = LeaseElector(settings, api, clock=clock)  # type: ignore[arg-type]
        assert await a.try_acquire_or_renew()
        assert api.lease is not None and api.lease.spec.lease_duration_seconds == 7

    asyncio.run(scenario())


def test_check_gives_the_time_left_until_a_standby_may_act() -> None:
    async def scenario() -> None:
        api, clock, lost = FakeLeases(), Clock(), list[str]()
        a = elector(api, clock, "a", lost)
        assert await a.try_acquire_or_renew()          # at 100: a standby may act at 115
        clock.now += 9.5
        assert a.check() == pytest.approx(5.5) and lost == []
        clock.now += 0.5                               # the renew deadline: no write starts
        a.check()
        assert lost == ["not renewed within 10 s"]

    asyncio.run(scenario())


def test_an_unchecked_request_started_before_the_watchdog_fires_ends_in_time() -> None:
    """kopf's requests pass no check: the watchdog ends the process at most one watchdog
    period after the renew deadline, so their timeout must fit what is left after it."""
    settings = LeaseSettings(namespace="ops", name="lease", identity="a")
    latest_start = settings.renew_deadline + settings.watchdog_period
    assert latest_start + settings.write_budget <= settings.duration
    assert settings.write_budget == pytest.approx(4.5)
    with pytest.raises(ValueError, match="duration - renew deadline > retry period / 4"):
        LeaseSettings(namespace="ops", name="lease", identity="a", duration=10,
                      renew_deadline=9.9, retry_period=2)
