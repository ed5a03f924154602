"""Events are correlated as client-go does: a repeat raises the count of the Event already
posted, each object's events are rate-limited, memory is bounded; and every write of the
Kube edge, events included, ends before the Lease may pass to a standby.

``Kube`` runs for real here; only the generated API objects it calls are small fakes that
record each request (the real apiserver: tests/operator/)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from metamapper_operator.events import Correlator, Involved
from metamapper_operator.kube import REQUEST_TIMEOUT, Kube, KubeError

OBJECT = {"namespace": "team", "name": "mm", "uid": "u-1"}


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeApi:
    """Any generated API: every call is recorded as (method, args, kwargs)."""

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)  # Event names that answer 404

    def __getattr__(self, method: str) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append((method, args, kwargs))
            if method == "patch_namespaced_event" and args[0] in self.missing:
                raise ApiException(status=404, reason="Not Found")
        return call

    def of(self, method: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for name, args, kwargs in self.calls if name == method]


@pytest.fixture
def kube() -> Iterator[Kube]:
    fake = FakeApi()
    kube = Kube(fake)  # type: ignore[arg-type]  # the generated APIs only keep it
    kube.core = kube.apps = kube.custom = fake  # type: ignore[assignment]
    kube.events = Correlator(Clock())
    yield kube


def api(kube: Kube) -> FakeApi:
    assert isinstance(kube.core, FakeApi)
    return kube.core


def clock(kube: Kube) -> Clock:
    assert isinstance(kube.events.clock, Clock)
    return kube.events.clock


def post(kube: Kube, message: str, times: int = 1, reason: str = "ScaledUp") -> None:
    async def posts() -> None:
        for _ in range(times):
            await kube.event(OBJECT, "Normal", reason, message)
    asyncio.run(posts())


def test_an_event_names_the_process_that_reported_it(kube: Kube) -> None:
    """reportingInstance is the process (its Lease holder's name): an upgrade's checks
    tell the events of this release's operator from an earlier one's, which set none."""
    kube.instance = "metamapper-operator-7d9f-x2x5q_0a1b2c3d4e5f"
    post(kube, "pool default: 1 -> 2 pods")
    body = api(kube).of("create_namespaced_event")[0][0][1]
    assert body.reporting_component == body.source.component == "metamapper-operator"
    assert body.reporting_instance == "metamapper-operator-7d9f-x2x5q_0a1b2c3d4e5f"


def test_identical_events_become_one_event_with_a_count(kube: Kube) -> None:
    post(kube, "pool default: 1 -> 2 pods", times=5)
    created = api(kube).of("create_namespaced_event")
    assert len(created) == 1
    name = created[0][0][1].metadata.name
    patches = api(kube).of("patch_namespaced_event")
    assert [(args[0], args[2]["count"]) for args, _ in patches] == [
        (name, 2), (name, 3), (name, 4), (name, 5)]
    assert all("lastTimestamp" in args[2] for args, _ in patches)


def test_another_message_reason_or_object_is_another_event(kube: Kube) -> None:
    post(kube, "pool default: 1 -> 2 pods")
    post(kube, "pool default: 2 -> 1 pods")
    post(kube, "pool default: 1 -> 2 pods", reason="ScaledDown")
    asyncio.run(kube.event({**OBJECT, "name": "other"}, "Normal", "ScaledUp",
                           "pool default: 1 -> 2 pods"))
    assert len(api(kube).of("create_namespaced_event")) == 4
    assert api(kube).of("patch_namespaced_event") == []


def test_a_repeat_after_the_window_or_of_a_vanished_event_is_posted_anew(kube: Kube) -> None:
    post(kube, "flap", times=2)
    clock(kube).now += kube.events.window
    post(kube, "flap")
    assert len(api(kube).of("create_namespaced_event")) == 2
    # The apiserver expired the Event (its TTL): counted in a new one.
    first = api(kube).of("create_namespaced_event")[-1][0][1].metadata.name
    api(kube).missing.add(first)
    post(kube, "flap")
    assert len(api(kube).of("create_namespaced_event")) == 3
    post(kube, "flap")
    assert api(kube).of("patch_namespaced_event")[-1][0][2]["count"] == 2


def test_each_objects_events_are_rate_limited(kube: Kube) -> None:
    burst = kube.events.burst
    for i in range(burst + 10):
        post(kube, f"pool default: {i} -> {i + 1} pods")
    assert len(api(kube).calls) == burst
    # Repeats are writes too: no token, no patch.
    post(kube, "pool default: 0 -> 1 pods")
    assert len(api(kube).calls) == burst
    clock(kube).now += kube.events.refill_seconds
    post(kube, "pool default: 0 -> 1 pods")
    post(kube, "pool default: 0 -> 1 pods")
    assert [name for name, _, _ in api(kube).calls[burst:]] == ["patch_namespaced_event"]
    # Another object has a bucket of its own.
    asyncio.run(kube.event({**OBJECT, "name": "other"}, "Normal", "ScaledUp", "x"))
    assert len(api(kube).calls) == burst + 2


def test_memory_is_bounded() -> None:
    correlator = Correlator(Clock(), capacity=3)
    for i in range(10):
        involved = Involved(namespace="team", name=f"mm-{i}", uid=None)
        assert correlator.admit(involved)
    assert len(correlator._buckets) == 3


# --- fencing: a write takes no longer than the guard allows -------------------------------


def writes(kube: Kube) -> Callable[[], Any]:
    async def all_writes() -> None:
        await kube.scale("team", "mm-default", 2)
        await kube.patch_status("team", "mm", {"observedGeneration": 2})
        await kube.annotate_pod("team", "mm-default-abc", {"a": "b"})
        await kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "mm-default", "namespace": "team"}})
        await kube.delete("Deployment", "team", "mm-old")
        await kube.event(OBJECT, "Normal", "ScaledUp", "pool default: 1 -> 2 pods")
    return all_writes


def test_a_write_ends_before_the_lease_may_pass_on(kube: Kube) -> None:
    kube.guard = lambda: 3.5  # seconds left until a standby may act
    asyncio.run(writes(kube)())
    timeouts = [kwargs["_request_timeout"] for _, _, kwargs in api(kube).calls]
    assert len(timeouts) == 6 and set(timeouts) == {3.5}


def test_a_write_takes_the_request_timeout_when_the_guard_allows_more(kube: Kube) -> None:
    kube.guard = lambda: 60.0
    asyncio.run(writes(kube)())
    assert {kwargs["_request_timeout"] for _, _, kwargs in api(kube).calls} == {REQUEST_TIMEOUT}


def test_no_write_starts_without_time_left(kube: Kube) -> None:
    kube.guard = lambda: 0.0
    with pytest.raises(KubeError, match="no time left before the Lease may pass on"):
        asyncio.run(kube.scale("team", "mm-default", 2))
    post(kube, "logged, not raised")
    assert api(kube).calls == []
