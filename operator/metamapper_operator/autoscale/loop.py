"""The autoscaling loop: one for the whole operator, not a timer per object.

Every polling interval it groups the pools of every Metamapper by broker, measures each
broker once (all its queues in one round trip where the broker allows), decides each
pool's size with the pure policy, and patches the scale subresource only of Deployments
whose size must change. When nothing changes it makes no API request at all.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from metamapper_operator import metrics
from metamapper_operator.autoscale.drain import active_tasks, can_broadcast
from metamapper_operator.autoscale.eviction import carries_marks, eviction_marks, worth_asking
from metamapper_operator.autoscale.latency import Sample, Throughput, for_wait, observe
from metamapper_operator.autoscale.policy import Bounds, History, at_rest, decide
from metamapper_operator.autoscale.schedule import Window, active_window, next_change, raised
from metamapper_operator.autoscale.shrink import Outcome, Shrinker
from metamapper_operator.brokers import Probe, ProbeError, QueueDepth, probe_for
from metamapper_operator.brokers.base import probe_error
from metamapper_operator.builders import (
    celery_settings,
    pool_deployment_name,
    selector_labels,
)
from metamapper_operator.contradictions import unconsumed_queues
from metamapper_operator.kube import KubeError
from metamapper_operator.model import Fleet, Pool, Schedule
from metamapper_operator.publish import now
from metamapper_operator.references import BrokerAccess
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState, PoolScale

log = logging.getLogger(__name__)

DeploymentsOf = Callable[[Key], Mapping[str, DeploymentState]]
# Intervals without a finished cycle after which the autoscaler counts as stalled.
STALLED_CYCLES = 3


def wall_clock() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def backlog_of(pool: Pool, depths: Mapping[str, QueueDepth]) -> int:
    """Messages waiting on the pool's queues, plus in flight when the pool counts them."""
    total = 0
    for queue in pool.queues:
        depth = depths.get(queue, QueueDepth(waiting=0, in_flight=0))
        total += depth.waiting
        if pool.autoscaling.count_in_flight and depth.in_flight:
            total += depth.in_flight
    return total


def pool_series(key: Key, pool: Pool) -> metrics.PoolSeries:
    return metrics.PoolSeries(key.namespace, key.name, pool.name)


def broker_series(access: BrokerAccess) -> tuple[str, str]:
    """A broker's metric labels: transport and address, never credentials."""
    return access.transport, metrics.broker_label(access.display)


def scale_reason(backlog: int | None, pool: Pool) -> metrics.ScaleReason:
    """The bounded reason label of a resize the policy asked for."""
    if backlog is None:
        return metrics.ScaleReason.BROKER_UNREACHABLE
    if backlog <= pool.autoscaling.activation_backlog:
        return metrics.ScaleReason.IDLE
    return metrics.ScaleReason.BACKLOG


def pool_depths(pool: Pool, depths: Mapping[str, QueueDepth] | None
                ) -> dict[str, Shown | None] | None:
    """What the pool's queue gauges show of these depths (ages included: QueueDepth's
    equality ignores them, the gauges do not)."""
    if depths is None:
        return None
    return {queue: None if (d := depths.get(queue)) is None else Shown.of(d)
            for queue in pool.queues}


def record_pool(series: metrics.PoolSeries, pool: Pool,
                depths: Mapping[str, QueueDepth] | None, backlog: int | None,
                desired: int, current: int) -> None:
    """A pool's gauges after a decision; its queues' when the broker answered (else the
    last figures stand, as the backlog's does)."""
    previous = metrics.pool_table.get(series)
    if depths is None:
        queues = previous.queues if previous is not None else {}
    else:
        queues = {}
        for queue in pool.queues:
            depth = depths.get(queue, QueueDepth(waiting=0, in_flight=0))
            queues[queue] = metrics.QueueFigures(depth.waiting, depth.in_flight,
                                                 depth.oldest_age)
    if backlog is None and previous is not None:
        backlog = previous.backlog
    metrics.pool_table.record(series, metrics.PoolFigures(
        desired, current, pool.min_replicas, pool.max_replicas, backlog, queues))


@dataclass(kw_only=True, slots=True)
class Measurement:
    """One broker's answer: the depths, or the error (redacted) that stopped them."""

    depths: dict[str, QueueDepth] | None
    source: str | None
    error: str | None = None
    unconsumed: tuple[str, ...] | None = None  # queues with messages and no consumer


@dataclass(frozen=True, slots=True)
class Member:
    """A pool to scale, with the generation of the spec it was read from."""

    key: Key
    fleet: Fleet
    pool: Pool
    generation: int


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything a pool's decision is made from, besides the time."""

    generation: int
    current: int
    ready: int
    backlog: int | None
    stale: int | None
    window: Window | None


@dataclass(frozen=True, slots=True)
class Shown:
    """One queue's figures as its gauges show them."""

    waiting: int
    in_flight: int | None
    stale: int
    oldest_age: float | None

    @classmethod
    def of(cls, depth: QueueDepth) -> Shown:
        return cls(depth.waiting, depth.in_flight, depth.stale, depth.oldest_age)


@dataclass(slots=True)
class Rest:
    """A pool at rest: decided from ``inputs`` with ``bounds``, its size unchanged and no
    window running out; ``seen`` is the last cycle that found the same inputs, and
    ``recorded`` the depths of its queues that its gauges show."""

    inputs: Inputs
    bounds: Bounds
    seen: float
    recorded: Mapping[str, Shown | None] | None


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """A pool's schedule window as evaluated, valid until ``until`` (None: forever)."""

    schedules: tuple[Schedule, ...]
    window: Window | None
    until: datetime.datetime | None


PoolKey = tuple[str, str]  # (uid, pool name)


@dataclass(frozen=True, slots=True)
class Reading:
    """What one broker's measurement shows any pool, gauge or status: two cycles with
    equal readings (and nothing else changed) decide the same."""

    shown: dict[str, Shown] | None
    source: str | None
    error: str | None
    unconsumed: tuple[str, ...] | None

    @classmethod
    def of(cls, measurement: Measurement) -> Reading:
        depths = measurement.depths
        return cls(None if depths is None else {
            queue: Shown.of(depth) for queue, depth in depths.items()},
            measurement.source, measurement.error, measurement.unconsumed)


@dataclass(frozen=True, slots=True)
class Quiet:
    """What a cycle that left every pool at rest found: the state's revision, the
    brokers' readings, and when the first schedule window opens or closes. A cycle that
    finds the same has nothing to decide, record or write, and stops after measuring."""

    revision: int
    readings: dict[BrokerAccess, Reading]
    until: datetime.datetime | None


@dataclass(frozen=True, slots=True)
class Grouped:
    """The pools to scale by broker, as of the state's ``revision``."""

    revision: int
    groups: dict[BrokerAccess, list[Member]]


@dataclass(frozen=True, slots=True)
class Retained:
    """What a cycle kept the metric series of."""

    pools: dict[metrics.PoolSeries, set[str]]
    brokers: set[tuple[str, str]]


@dataclass
class Autoscaler:
    runtime: Runtime
    deployments_of: DeploymentsOf
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime.datetime] = wall_clock  # for schedules
    probes: dict[BrokerAccess, Probe] = field(default_factory=dict)
    # By (uid, pool): a re-created object (same name, new uid) starts without history.
    history: dict[tuple[str, str], History] = field(default_factory=dict)
    # By (uid, pool), for pools with a latency target.
    throughput: dict[PoolKey, Throughput] = field(default_factory=dict)
    # Pools whose inputs did not change cost no policy work (see _scale_pool).
    resting: dict[PoolKey, Rest] = field(default_factory=dict)
    windows: dict[PoolKey, OpenWindow] = field(default_factory=dict)
    finished: float | None = None  # when the last cycle ended (clock), None before one
    # By (uid, pool): pods last seen marked not safe to evict (absent: not known yet).
    marked: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    shrinker: Shrinker | None = None   # made on first use, with the runtime's Kube edge
    # The pools (with their queues) and brokers whose series the last cycle kept: a cycle
    # that finds the same walks no series (at rest, with thousands of pools).
    retained: Retained | None = None
    grouped: Grouped | None = None
    # Set by a cycle that left every pool at rest (see Quiet); ``quiet_at`` is the last
    # cycle that found it again, the last one each resting pool's inputs were seen.
    quiet: Quiet | None = None
    quiet_at: float | None = None

    def _shrinker(self) -> Shrinker:
        if self.shrinker is None:
            self.shrinker = Shrinker(self.runtime.kube, self.clock)
        return self.shrinker

    @property
    def cycle_limit(self) -> float:
        """The longest one cycle may take; past it, it is cancelled (its locks released)."""
        return max(self.runtime.config.poll_seconds, self.runtime.config.cycle_limit_seconds)

    async def run(self) -> None:
        self.finished = self.clock()
        while True:
            started = self.clock()
            try:
                async with asyncio.timeout(self.cycle_limit):
                    await self.cycle()
            except TimeoutError:
                log.error("autoscaling cycle cancelled after %g s", self.cycle_limit)
            except Exception:
                # A bug in one cycle must not end autoscaling for every fleet.
                log.exception("autoscaling cycle failed")
            else:
                self.finished = self.clock()
            elapsed = self.clock() - started
            metrics.cycle_seconds.observe(elapsed)
            await asyncio.sleep(max(0.0, self.runtime.config.poll_seconds - elapsed))

    def stalled(self) -> str | None:
        """A liveness problem when no cycle finished for several intervals."""
        if self.finished is None:
            return None
        late = self.clock() - self.finished
        allowed = STALLED_CYCLES * self.runtime.config.poll_seconds + self.cycle_limit
        if late > allowed:
            return f"no autoscaling cycle finished for {late:.0f} s"
        return None

    async def close(self) -> None:
        for probe in self.probes.values():
            await probe.close()
        self.probes.clear()

    def _groups(self, revision: int) -> dict[BrokerAccess, list[Member]]:
        """The pools to scale by broker, walked again only after the state changed."""
        if self.grouped is None or self.grouped.revision != revision:
            self.grouped = Grouped(revision, self._group())
        return self.grouped.groups

    def _group(self) -> dict[BrokerAccess, list[Member]]:
        groups: dict[BrokerAccess, list[Member]] = defaultdict(list)
        for key, state in list(self.runtime.fleets.items()):
            fleet, access = state.fleet, state.access
            if (fleet is None or access is None or fleet.suspend or state.invalid
                    or fleet.pause is not None):
                continue
            for pool in fleet.pools:
                if pool.autoscaling.enabled:
                    groups[access].append(Member(key, fleet, pool, state.generation))
        return groups

    def _current(self, member: Member) -> bool:
        """Whether the spec a decision was made from is still the object's (read under the
        object's lock: a suspend or new bounds that landed while measuring win)."""
        state = self.runtime.fleets.get(member.key)
        return (state is not None and state.fleet is not None and not state.invalid
                and state.generation == member.generation and not state.fleet.suspend
                and state.fleet.pause is None)

    async def _measure(self, access: BrokerAccess, queues: set[str]) -> Measurement:
        """One broker's depths, or its error: whatever goes wrong with one broker (a URL
        its client library refuses, say) is that broker's alone."""
        labels = broker_series(access)
        started = self.clock()
        source = None
        try:
            probe = self.probes.get(access)
            if probe is None:
                probe = self.probes[access] = probe_for(access)
            source = probe.source
            depths = await probe.measure(queues)
        except Exception as err:
            metrics.probe_errors.labels(*labels).inc()
            metrics.broker_up.labels(*labels).set(0)
            if not isinstance(err, ProbeError):
                err = probe_error(access, access.display, err)
            return Measurement(depths=None, source=source, error=str(err))
        finally:
            metrics.probe_seconds.labels(*labels).observe(self.clock() - started)
        metrics.broker_up.labels(*labels).set(1)
        return Measurement(depths=depths, source=source, unconsumed=probe.unconsumed)

    def _is_quiet(self, revision: int, readings: dict[BrokerAccess, Reading],
                  wall: datetime.datetime) -> bool:
        quiet = self.quiet
        return (quiet is not None and quiet.revision == revision
                and quiet.readings == readings
                and (quiet.until is None or wall < quiet.until)
                and not self.runtime.settling())

    async def cycle(self) -> None:
        # Read before anything else: a change made while this cycle runs makes the next
        # one walk every pool again.
        revision = self.runtime.revision
        groups = self._groups(revision)
        for stale in set(self.probes) - set(groups):
            await self.probes.pop(stale).close()
        accesses = list(groups)
        measurements = await asyncio.gather(*(
            self._measure(a, {q for member in groups[a] for q in member.pool.queues})
            for a in accesses))
        readings = {access: Reading.of(measurement)
                    for access, measurement in zip(accesses, measurements, strict=True)}
        wall = self.wall()
        if self._is_quiet(revision, readings, wall):
            self.quiet_at = self.clock()
            return
        self.quiet = None
        if await self._walk(groups, accesses, measurements, wall):
            self.quiet = Quiet(revision, readings, min(
                (w.until for w in self.windows.values() if w.until is not None),
                default=None))

    async def _walk(self, groups: dict[BrokerAccess, list[Member]],
                    accesses: list[BrokerAccess], measurements: list[Measurement],
                    wall: datetime.datetime) -> bool:
        """Decide every pool (those at rest with the same inputs cost a comparison);
        True when every pool is left at rest and every write went through."""
        calm = True
        seen: set[str] = set()
        scaled: set[tuple[str, str]] = set()
        changed: dict[Key, None] = {}  # ordered, so statuses are written in a stable order
        series: dict[metrics.PoolSeries, set[str]] = {}
        for access, measurement in zip(accesses, measurements, strict=True):
            for member in groups[access]:
                key = member.key
                seen.add(member.fleet.uid)
                series[pool_series(key, member.pool)] = (
                    set() if measurement.depths is None else set(member.pool.queues))
                scaled.add((member.fleet.uid, member.pool.name))
                inputs = self._inputs(member, measurement, wall)
                if inputs is None:  # not created yet: the reconciler will
                    calm = False
                    continue
                rest = self.resting.get((member.fleet.uid, member.pool.name))
                if rest is not None and rest.inputs == inputs:
                    rest.seen = self.clock()
                    # Its gauges already show these figures unless a queue's changed.
                    depths = pool_depths(member.pool, measurement.depths)
                    if depths != rest.recorded:
                        record_pool(pool_series(key, member.pool), member.pool,
                                    measurement.depths, inputs.backlog, inputs.current,
                                    inputs.current)
                        rest.recorded = depths
                    continue
                lock = self.runtime.locks.get(key)
                if lock is None:  # deleted meanwhile
                    continue
                try:
                    async with lock:
                        if self._current(member) and await self._scale_pool(
                                key, member.fleet, member.pool, access, measurement,
                                inputs):
                            changed[key] = None
                except KubeError as err:  # this pool only; the next cycle tries again
                    calm = False
                    log.warning("scaling pool %s of %s/%s: %s", member.pool.name, *key, err)
                calm = calm and (member.fleet.uid, member.pool.name) in self.resting
            orphans = None if measurement.unconsumed is None else unconsumed_queues(
                (q for member in groups[access] for q in member.pool.queues),
                measurement.unconsumed)
            for key in dict.fromkeys(member.key for member in groups[access]):
                if await self._broker_state(key, measurement.error):
                    changed[key] = None
                if self._unconsumed_state(key, orphans):
                    changed[key] = None
        # Only objects whose measurements changed need their status rendered again.
        for key in changed:
            lock = self.runtime.locks.get(key)
            if lock is None:
                continue
            try:
                async with lock:
                    await self.runtime.publish(key, self.deployments_of(key))
            except KubeError as err:
                calm = False
                log.warning("status of %s/%s: %s", *key, err)
        # Forget pools of objects that are gone, and their series; workers of pools no
        # longer scaled that were draining consume again.
        self.history = {k: v for k, v in self.history.items() if k[0] in seen}
        self.throughput = {k: v for k, v in self.throughput.items() if k[0] in seen}
        self.resting = {k: v for k, v in self.resting.items() if k[0] in seen}
        self.windows = {k: v for k, v in self.windows.items() if k[0] in seen}
        self.marked = {k: v for k, v in self.marked.items() if k[0] in seen}
        retained = Retained(series, {broker_series(access) for access in accesses})
        if retained != self.retained:
            metrics.retain(retained.pools, retained.brokers)
            self.retained = retained
        await self._shrinker().abandon(scaled)
        return calm

    async def _broker_state(self, key: Key, error: str | None) -> bool:
        """Record whether the broker answered; True when that changed."""
        state = self.runtime.fleets.get(key)
        if state is None or error == state.broker_error:
            return False
        if error and not state.broker_error:
            await self._event(key, "Warning", "BrokerUnreachable",
                              f"{error}; holding every pool at its size")
        elif state.broker_error and not error:
            await self._event(key, "Normal", "BrokerReachable", "the broker answers again")
        state.broker_error = error
        return True

    def _unconsumed_state(self, key: Key, orphans: list[str] | None) -> bool:
        """Record the broker's queues nobody consumes; True when that changed."""
        state = self.runtime.fleets.get(key)
        found = None if orphans is None else tuple(orphans)
        if state is None or state.unconsumed == found:
            return False
        state.unconsumed = found
        return True

    async def _event(self, key: Key, kind: str, reason: str, message: str) -> None:
        state = self.runtime.fleets.get(key)
        uid = state.uid if state else None
        await self.runtime.kube.event({"namespace": key.namespace, "name": key.name, "uid": uid},
                                      kind, reason, message)

    def _inputs(self, member: Member, measurement: Measurement, wall: datetime.datetime
                ) -> Inputs | None:
        """What the pool's decision depends on now; None while its Deployment is missing."""
        fleet, pool = member.fleet, member.pool
        name = pool_deployment_name(fleet, pool)
        dep = self.deployments_of(member.key).get(name)
        if dep is None:
            return None
        depths = measurement.depths
        return Inputs(
            generation=member.generation,
            current=self.runtime.replicas(member.key, name, dep.replicas), ready=dep.ready,
            backlog=None if depths is None else backlog_of(pool, depths),
            stale=None if depths is None else sum(
                depths[queue].stale for queue in pool.queues if queue in depths),
            window=self._window(fleet, pool, wall))

    def _window(self, fleet: Fleet, pool: Pool, wall: datetime.datetime) -> Window | None:
        """The pool's open schedule window, evaluated again only when it may change."""
        schedules = pool.autoscaling.schedules
        if not schedules:
            return None
        cached = self.windows.get((fleet.uid, pool.name))
        if cached is None or cached.schedules != schedules or (
                cached.until is not None and wall >= cached.until):
            cached = OpenWindow(schedules, active_window(schedules, wall),
                                next_change(schedules, wall))
            self.windows[(fleet.uid, pool.name)] = cached
        return cached.window

    async def _scale_pool(self, key: Key, fleet: Fleet, pool: Pool, access: BrokerAccess,
                          measurement: Measurement, inputs: Inputs) -> bool:
        """Decide the pool's size and apply it; True when what status shows changed.

        A pool whose decision left its size as it was, with nothing pending in time, is
        at rest: later cycles that find the same inputs skip it (no policy work, no
        status). When its inputs change, the decision it would have made at the last of
        those cycles is replayed first, so its history is as if it had been decided
        every cycle.
        """
        name = pool_deployment_name(fleet, pool)
        pool_key = (fleet.uid, pool.name)
        current, backlog, window = inputs.current, inputs.backlog, inputs.window
        depths = measurement.depths
        history = self.history.get(pool_key, History())
        rest = self.resting.pop(pool_key, None)
        if rest is not None:
            # Quiet cycles found its inputs unchanged too, without looking.
            seen = max(rest.seen, self.quiet_at or rest.seen)
            history = decide(rest.bounds, rest.inputs.current, rest.inputs.backlog, seen,
                             history).history
        bounds, per_pod = self._bounds(fleet, pool, backlog, inputs.ready, window)
        decision = decide(bounds, current, backlog, self.clock(), history)
        self.history[pool_key] = decision.history
        state = self.runtime.fleets[key]  # present: checked under the lock
        previous = state.scaling.get(pool.name)
        target, reason = decision.replicas, decision.reason
        if can_broadcast(access):
            outcome = await self._shrinker().step(
                fleet, pool, access, current, target,
                lambda kind, why, message: self._event(key, kind, why, message))
        else:  # SQS: no broadcast, no drain; the ReplicaSet controller picks (module doc)
            outcome = Outcome(target)
        target, reason = outcome.replicas, reason + outcome.note
        timed_out = outcome.timed_out or (previous.drain_timed_out if previous else None)
        scale = PoolScale(backlog=backlog, source=measurement.source,
                          desired=decision.replicas,
                          last_scale_time=previous.last_scale_time if previous else None,
                          last_scale_reason=previous.last_scale_reason if previous else None,
                          stale_in_flight=inputs.stale, draining=outcome.draining,
                          drain_timed_out=timed_out, window=window,
                          throughput_per_pod=per_pod)
        cause = scale_reason(backlog, pool)
        # SQS has no broadcast: its workers cannot be asked.
        if can_broadcast(access) and depths is not None and worth_asking(
                current, (_may_hold_work(depths.get(q)) for q in pool.queues),
                self.marked.get((fleet.uid, pool.name))):
            await self._mark_running(fleet, pool, access)
        if target != current:
            await self._resize(key, pool, name, current, target, reason, cause)
            scale = replace(scale, last_scale_time=now(), last_scale_reason=reason)
        elif decision.replicas == current and at_rest(decision.history, current):
            self.resting[pool_key] = Rest(inputs, bounds, self.clock(),
                                          pool_depths(pool, depths))
        record_pool(pool_series(key, pool), pool, depths, backlog, decision.replicas, current)
        if scale == previous:
            return False
        state.scaling[pool.name] = scale
        return True

    def _bounds(self, fleet: Fleet, pool: Pool, backlog: int | None, ready: int,
                window: Window | None) -> tuple[Bounds, float | None]:
        """The pool's bounds with what raises them now: the backlog target its latency
        target asks for (from the throughput measured so far) and the minimum of an open
        schedule window. Also returns the throughput, for status."""
        bounds = Bounds.of(pool)
        wait = pool.autoscaling.target_wait_seconds
        per_pod = None
        if wait is not None:
            seen = self.throughput.get((fleet.uid, pool.name), Throughput())
            if backlog is not None:
                seen = observe(seen, Sample(self.clock(), backlog, ready))
                self.throughput[(fleet.uid, pool.name)] = seen
            bounds = for_wait(bounds, wait, seen)
            per_pod = None if seen.per_pod is None else round(seen.per_pod, 3)
        return raised(bounds, window), per_pod

    async def _resize(self, key: Key, pool: Pool, name: str, current: int, target: int,
                      reason: str, cause: metrics.ScaleReason) -> None:
        await self.runtime.kube.scale(key.namespace, name, target)
        self.runtime.note_scale(key, name, target)
        direction = "up" if target > current else "down"
        metrics.scale_events.labels(key.namespace, key.name, pool.name, direction,
                                     cause).inc()
        await self._event(key, "Normal", f"Scaled{direction.capitalize()}",
                          f"pool {pool.name}: {current} -> {target} pods ({reason})")

    async def _mark_running(self, fleet: Fleet, pool: Pool, access: BrokerAccess) -> None:
        """Ask the pool's workers what they run; mark the busy pods not safe to evict and
        unmark the idle ones (a worker that does not answer keeps its marks)."""
        kube = self.runtime.kube
        pods = {name: pod.annotations for name, pod in (await kube.list_pods(
            fleet.namespace, selector_labels(fleet, "worker", pool.name))).items()}
        transport_options = celery_settings(fleet).get("broker_transport_options") or {}
        # The shrinker's way of reaching workers (given in the wiring tests).
        control = self._shrinker().control_for(access, transport_options)
        active = await active_tasks(control, pool.name, list(pods))
        if active is None:  # cannot ask: the marks stay as they are
            self.marked[(fleet.uid, pool.name)] = frozenset(
                pod for pod, annotations in pods.items() if carries_marks(annotations))
            return
        marks = eviction_marks(pods, active)
        for pod, patch in marks.patches.items():
            await kube.annotate_pod(fleet.namespace, pod, patch)
        self.marked[(fleet.uid, pool.name)] = marks.marked


def _may_hold_work(depth: QueueDepth | None) -> bool:
    """Whether a queue may have tasks for the workers (an unknown in-flight count may)."""
    if depth is None:
        return False
    return depth.waiting > 0 or depth.in_flight is None or depth.in_flight > 0
