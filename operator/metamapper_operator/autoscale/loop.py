"""The autoscaling loop: one for the whole operator, not a timer per object.

Every polling interval it groups the pools of every Metamapper by broker, measures each
broker once (all its queues in one round trip where the broker allows), decides each
pool's size with the pure policy, and patches the scale subresource only of Deployments
whose size must change. When nothing changes it makes no API request at all.

Whatever fails in one pool's or one object's step stays there: each runs inside a
:class:`~metamapper_operator.containment.Boundary`, whose fault the object's status shows
(Ready False with the reason, one Warning event) until the step succeeds again, while
every other pool is decided in the same cycle. A queue the broker could not measure
holds the pools that consume it (no decision on a partial backlog) and no other.

Questions to the workers (what they run, for the not-safe-to-evict marks) never come
before a decision: the pools that want them are asked after the cycle, in a round of
their own beside the cycles (:meth:`Autoscaler._ask`), only the pods that can answer,
one broadcast per broker, within one budget.

Time is contained like failures: one broker's measurement, one wait for an object's lock
and one pool's step each have a share of the polling interval (see
:attr:`Autoscaler.measure_limit`). A broker that does not answer in time is that broker's
error; an object whose lock is held (a long reconcile) is skipped until the next cycle. A
pool's step that outlasts its share is not cut short (a drain waiting for a worker's reply
takes a second by design): it goes on beside the cycles, which walk on without its object
until it ends, and only past its own limit (:attr:`Autoscaler.late_limit`) is it
cancelled, the pool held at its size with a fault. A cycle cancelled at its limit all the
same leaves the pools it never reached to be walked first by the next one, the steps it
waited for going on to their end, and the status writes it did not make pending.

A burst on many fleets at once is not served one request at a time: the walk steps
:data:`OBJECTS_AT_ONCE` objects side by side (each object's pools one after the other,
under its lock), the objects with messages waiting that their pools' last decision did not
see first, and the status writes that follow go out side by side too. The fleets come
from the reconciler's states and, before an object's first reconcile, from kopf's index
(:class:`~metamapper_operator.listed.Learner`): after a restart a burst waits for the
listings (the objects', their Deployments'), not for its object's turn among the
reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from metamapper_operator import metrics
from metamapper_operator.autoscale import waves
from metamapper_operator.autoscale.drain import active_tasks, can_broadcast
from metamapper_operator.autoscale.drainplan import WorkerPod, hostname
from metamapper_operator.autoscale.eviction import (
    can_answer,
    carries_marks,
    eviction_marks,
    worth_asking,
)
from metamapper_operator.autoscale.latency import (
    Sample,
    Sized,
    Throughput,
    for_wait,
    observe,
    of_pods,
)
from metamapper_operator.autoscale.policy import Bounds, History, at_rest, decide
from metamapper_operator.autoscale.schedule import Window, active_window, next_change, raised
from metamapper_operator.autoscale.shrink import Known, Outcome, Shrinker
from metamapper_operator.autoscale.waves import Beat, Outlook, Start, Warming
from metamapper_operator.brokers import Probe, ProbeError, QueueDepth, probe_for
from metamapper_operator.brokers.base import probe_error, secrets_of
from metamapper_operator.brokers.hosts import dialled
from metamapper_operator.builders import (
    Part,
    celery_settings,
    pool_deployment_name,
    selector_labels,
)
from metamapper_operator.containment import Boundary, describe
from metamapper_operator.contradictions import unconsumed_queues
from metamapper_operator.kube import KubeError
from metamapper_operator.listed import Learner
from metamapper_operator.model import Fleet, Pool, Schedule, transport_options
from metamapper_operator.publish import now
from metamapper_operator.references import BrokerAccess
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState, Fault, PoolScale

log = logging.getLogger(__name__)

DeploymentsOf = Callable[[Key], Mapping[str, DeploymentState]]
# Intervals without a finished cycle after which the autoscaler counts as stalled.
STALLED_CYCLES = 3
# Seconds one round of questions to the workers may take (their pods listed, one
# broadcast per broker, the marks patched); it runs beside the cycles, never in one.
ASK_BUDGET = 5.0
# Pools whose pods one round of questions lists at once (after a restart, every busy
# pool is asked in the first round).
LISTINGS_AT_ONCE = 8
# Brokers one round of questions asks at once: each broadcast holds a worker-control
# thread (autoscale/drain.py), which the walk's drains and resumes need too.
BROADCASTS_AT_ONCE = 4
# Objects one walk steps at once (their scale patches, events and status writes in flight
# together), as many as reconciles (state.RECONCILES_AT_ONCE): a burst on a thousand
# fleets waits for a thousand round trips divided by this, not for all of them in a row.
OBJECTS_AT_ONCE = 16
# Steps that outlasted their share and go on beside the cycles, at most (see
# _step_object): past it a walk waits for each step to end, so a slow apiserver has
# twice OBJECTS_AT_ONCE of the loop's requests in flight. A cycle cancelled at its limit
# leaves the steps it waited for going on too, up to OBJECTS_AT_ONCE more until they end.
LATE_AT_ONCE = OBJECTS_AT_ONCE
# The condition reasons of the cycle's faults.
AUTOSCALING_FAILED = "AutoscalingFailed"
QUEUE_UNMEASURED = "QueueUnmeasured"
STATUS_FAILED = "StatusFailed"
# The object's steps besides its pools' (see POOL_STEPS).
BROKER_STEP = "autoscaling broker state"
STATUS_STEP = "autoscaling status"
# A pool's steps, by the prefix of their name (the pool's name follows): deciding and
# resizing it, measuring its queues, marking its busy pods.
POOL_STEP, QUEUES_STEP, MARKS_STEP = "autoscaling pool ", "measuring pool ", "marking pool "
POOL_STEPS = (POOL_STEP, QUEUES_STEP, MARKS_STEP)


class Overrun(Exception):
    """A pool's step took longer than its limit (:attr:`Autoscaler.late_limit`)."""


T = TypeVar("T")
R = TypeVar("R")


async def side_by_side(items: Sequence[T], work: Callable[[T], Awaitable[R]],
                       at_once: int) -> list[R]:
    """``work`` on every item, at most ``at_once`` at a time, started in the items' order;
    the results in that order. Whatever escapes one ``work`` cancels the others and is
    raised in an ExceptionGroup: a ``work`` that must not cancel the others contains its
    own failures (``Autoscaler._step_contained``)."""
    results: dict[int, R] = {}
    queue = iter(enumerate(items))

    async def worker() -> None:
        for n, item in queue:
            results[n] = await work(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(at_once, len(items))):
            group.create_task(worker())
    return [results[n] for n in range(len(items))]


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


def holds(at: datetime.datetime, until: datetime.datetime | None,
          wall: datetime.datetime) -> bool:
    """Whether what was evaluated at ``at`` (on the wall clock), valid until ``until``
    (None: for ever), still holds at ``wall``: a clock set back before ``at`` (by a
    correction) evaluates it again, as one that reached ``until`` does."""
    return at <= wall and (until is None or wall < until)


def stepped_pool(step: str) -> str | None:
    """The pool a step of the cycle is about; None for a step of the whole object."""
    for prefix in POOL_STEPS:
        if step.startswith(prefix):
            return step[len(prefix):]
    return None


def unmeasured(pool: Pool, failed: Mapping[str, str], secrets: list[str]) -> Fault | None:
    """The fault of a pool one of whose queues the broker could not measure, naming each
    such queue and why; None when every queue was measured."""
    found = [f"queue {queue}: {failed[queue]}" for queue in pool.queues if queue in failed]
    if not found:
        return None
    message = "; ".join(found) + "; holding the pool at its size"
    return Fault(step=QUEUES_STEP + pool.name, reason=QUEUE_UNMEASURED,
                 message=describe(ProbeError(message), secrets))


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
    # Queues the broker could not measure (absent from ``depths``), and why (scrubbed).
    failed: dict[str, str] = field(default_factory=dict)

    def of_pool(self, pool: Pool) -> dict[str, QueueDepth] | None:
        """The depths of the pool's queues; None unless every one was measured."""
        if self.depths is None or any(queue in self.failed for queue in pool.queues):
            return None
        return self.depths


@dataclass(frozen=True, slots=True)
class Member:
    """A pool to scale, with the generation of the spec it was read from."""

    key: Key
    fleet: Fleet
    pool: Pool
    generation: int


@dataclass(frozen=True, slots=True)
class Walked:
    """One object's part of a walk: its pools (all on one broker), the broker's answer
    and the credentials its messages must not show (read once per broker), and the
    queues of that broker nobody consumes (None: not known; ``orphans_fault`` when
    finding them failed)."""

    key: Key
    access: BrokerAccess
    measurement: Measurement
    secrets: list[str]
    members: tuple[Member, ...]
    orphans: list[str] | None
    orphans_fault: Fault | None


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything a pool's decision is made from, besides the time."""

    generation: int
    current: int
    ready: int
    backlog: int | None
    stale: int | None
    window: Window | None
    warm_up: Outlook | None = None
    pods: str = ""      # the pod template its Deployment runs (latency.of_pods)


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
    ``recorded`` the depths of its queues that its gauges show. ``listed``: decided while
    its object was known from the index alone, its decision not recorded for status; at
    rest only until the object's reconcile brings the status."""

    inputs: Inputs
    bounds: Bounds
    seen: float
    recorded: Mapping[str, Shown | None] | None
    listed: bool = False


@dataclass(frozen=True, slots=True)
class OpenWindow:
    """A pool's schedule window as evaluated at ``at``, valid until ``until`` (None:
    forever), and only after ``at``: a wall clock set back evaluates it again."""

    schedules: tuple[Schedule, ...]
    window: Window | None
    until: datetime.datetime | None
    at: datetime.datetime


PoolKey = tuple[str, str]  # (uid, pool name)


@dataclass(frozen=True, slots=True)
class KnownBeat:
    """A fleet's effective beat schedule, as read from the spec of ``generation``."""

    generation: int
    beat: Beat | None


@dataclass(frozen=True, slots=True)
class Warm:
    """A pool's warm-up as evaluated at ``at`` for a spec and a lead, valid until its
    ``until``, and only after ``at``: a wall clock set back evaluates it again."""

    generation: int
    lead: float
    warming: Warming
    at: datetime.datetime

    @property
    def until(self) -> datetime.datetime | None:
        return self.warming.until


@dataclass(frozen=True, slots=True)
class Reading:
    """What one broker's measurement shows any pool, gauge or status: two cycles with
    equal readings (and nothing else changed) decide the same."""

    shown: dict[str, Shown] | None
    source: str | None
    error: str | None
    unconsumed: tuple[str, ...] | None
    failed: dict[str, str]

    @classmethod
    def of(cls, measurement: Measurement) -> Reading:
        depths = measurement.depths
        return cls(None if depths is None else {
            queue: Shown.of(depth) for queue, depth in depths.items()},
            measurement.source, measurement.error, measurement.unconsumed,
            measurement.failed)


@dataclass(frozen=True, slots=True)
class Quiet:
    """What a cycle that left every pool at rest found: the state's revision, the
    brokers' readings, when it ran (``at``, on the wall clock) and when the first schedule
    window or warm-up changes. A cycle that finds the same, between the two, has nothing
    to decide, record or write, and stops after measuring."""

    revision: int
    readings: dict[BrokerAccess, Reading]
    until: datetime.datetime | None
    at: datetime.datetime


@dataclass(frozen=True, slots=True)
class Grouped:
    """The pools to scale by broker, as of the state's ``revision``."""

    revision: int
    groups: dict[BrokerAccess, list[Member]]


@dataclass(frozen=True, slots=True)
class Question:
    """A pool whose workers are to be asked what they run (for the not-safe-to-evict
    marks)."""

    key: Key
    fleet: Fleet
    pool: Pool
    access: BrokerAccess


@dataclass(frozen=True, slots=True)
class Listed:
    """A pool's pods, listed for a question, with its fleet's broker transport options
    (how its workers are reached)."""

    question: Question
    pods: Mapping[str, WorkerPod]
    options: Mapping[str, object]

    @property
    def broker(self) -> tuple[BrokerAccess, str]:
        """Which broadcast reaches its workers: one per broker and transport options."""
        return self.question.access, json.dumps(self.options, sort_keys=True, default=str)

    @property
    def answering(self) -> list[str]:
        """The hostnames of its workers that can answer."""
        return [hostname(self.question.pool.name, name) for name, pod in self.pods.items()
                if can_answer(pod)]


@dataclass(frozen=True, slots=True)
class Retained:
    """What a cycle kept the metric series of."""

    pools: dict[metrics.PoolSeries, set[str]]
    brokers: set[tuple[str, str]]


@dataclass
class Step:
    """One pool's step under way (:meth:`Autoscaler._step_object`): ``waited`` while a
    walk waits for it; a step that outlasts its share ends itself."""

    pool: PoolKey
    waited: bool = True
    task: asyncio.Task[bool] | None = None


@dataclass
class Autoscaler:
    runtime: Runtime
    deployments_of: DeploymentsOf
    # kopf's index of the Metamappers (handlers.metamappers): the fleets not reconciled
    # yet are learned from it (listed.Learner).
    bodies: Mapping[Key, Collection[str]] = field(default_factory=dict)
    learner: Learner = field(default_factory=Learner)
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
    # The warm-up before the fleet's beat (autoscale/waves.py): each fleet's schedule by
    # uid, each pool's warm-up and its pods' measured starts; the ignored entries last
    # announced by an event, by uid. Pods created before ``began`` (the first cycle's wall
    # clock) are not measured: their Ready condition may have come back long after their
    # start (a broker outage, say).
    beats: dict[str, KnownBeat] = field(default_factory=dict)
    warms: dict[PoolKey, Warm] = field(default_factory=dict)
    starts: dict[PoolKey, tuple[Start, ...]] = field(default_factory=dict)
    told: dict[str, tuple[str, ...]] = field(default_factory=dict)
    began: datetime.datetime | None = None
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
    # Pools whose workers are to be asked what they run, and the round asking them now
    # (see _ask): the questions wait for a round, never a decision for an answer.
    questions: dict[PoolKey, Question] = field(default_factory=dict)
    asking: asyncio.Task[None] | None = None
    # Objects whose status must be written again: a fault recorded or cleared outside a
    # walk's pools (a round of questions, a pool no longer scaled), or a failed write.
    # A key leaves only once its status is written: a cycle cancelled first keeps it.
    unpublished: dict[Key, None] = field(default_factory=dict)
    # Objects whose last status write failed: announced once by a Warning event, never
    # shown in the status itself (the write is tried again; see _publish).
    unwritten: set[Key] = field(default_factory=set)
    # Pools the last walk did not step (it was cancelled, or skipped their busy object),
    # in order: the next walk starts with them.
    unreached: dict[PoolKey, None] = field(default_factory=dict)
    # The pool steps under way, by object: the one a walk waits for, and those that
    # outlasted their share and go on beside the cycles (the walks skip their object
    # until they end; see _step_object).
    stepping: dict[Key, Step] = field(default_factory=dict)

    def _shrinker(self) -> Shrinker:
        if self.shrinker is None:
            self.shrinker = Shrinker(self.runtime.kube, self.clock)
        return self.shrinker

    @property
    def cycle_limit(self) -> float:
        """The longest one cycle may take; past it, it is cancelled (its locks released)."""
        return max(self.runtime.config.poll_seconds, self.runtime.config.cycle_limit_seconds)

    @property
    def measure_limit(self) -> float:
        """The longest one broker's measurement may take (past it, the broker's error):
        one interval, so that its pools are decided within two."""
        return min(self.runtime.config.poll_seconds, self.cycle_limit / 3)

    @property
    def step_limit(self) -> float:
        """The longest a walk waits for one pool's step (its share of the interval): past
        it, the step goes on beside the cycles and the walk without its object."""
        return self.measure_limit / 2

    @property
    def late_limit(self) -> float:
        """The longest one pool's step may take (past it, the pool's fault): as long as
        a cycle, so that a drain's calls to the workers (autoscale/drain.py) can end."""
        return self.cycle_limit

    @property
    def lock_wait(self) -> float:
        """How long a step waits for its object's lock before skipping the object."""
        return self.step_limit / 5

    @contextlib.asynccontextmanager
    async def _held(self, lock: asyncio.Lock) -> AsyncIterator[bool]:
        """Hold ``lock`` if it can be had within :attr:`lock_wait`; yields whether it
        is held."""
        try:
            async with asyncio.timeout(self.lock_wait):
                await lock.acquire()
        except TimeoutError:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

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
        for task in [self.asking, *(step.task for step in self.stepping.values())]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.stepping.clear()
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
            scaled: set[str] = set()
            if not (fleet is None or access is None or fleet.suspend or state.invalid
                    or fleet.pause is not None):
                for pool in fleet.pools:
                    if pool.autoscaling.enabled:
                        groups[access].append(Member(key, fleet, pool, state.generation))
                        scaled.add(pool.name)
            if state.faults:
                self._forget_faults(key, state.faults, scaled)
        return groups

    def _forget_faults(self, key: Key, faults: dict[str, Fault], scaled: set[str]) -> None:
        """Drop the faults of the cycle's steps that the object no longer runs: its pools
        no longer scaled, and all of them when none is."""
        ours = [step for step in faults
                if step == BROKER_STEP or stepped_pool(step) is not None]
        gone = [step for step in ours if not scaled or (
            (pool := stepped_pool(step)) is not None and pool not in scaled)]
        for step in gone:
            del faults[step]
        if gone:
            self.unpublished[key] = None

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
                # a short host the fleet's namespace does not resolve: the name as written
                async with asyncio.timeout(self.measure_limit):
                    chosen = await asyncio.to_thread(dialled, access)
                probe = self.probes[access] = probe_for(chosen)
            source = probe.source
            try:
                async with asyncio.timeout(self.measure_limit):
                    depths = await probe.measure(queues)
            except TimeoutError:
                raise ProbeError(f"{access.display}: no answer within "
                                 f"{self.measure_limit:g} s") from None
            failed = dict(probe.failed)  # queues it could not measure, and why
        except Exception as err:
            metrics.probe_errors.labels(*labels).inc()
            metrics.broker_up.labels(*labels).set(0)
            if not isinstance(err, ProbeError):
                err = probe_error(access, access.display, err)
            return Measurement(depths=None, source=source, error=str(err))
        finally:
            metrics.probe_seconds.labels(*labels).observe(self.clock() - started)
        metrics.broker_up.labels(*labels).set(1)
        return Measurement(depths=depths, source=source, unconsumed=probe.unconsumed,
                           failed=failed)

    def _is_quiet(self, revision: int, readings: dict[BrokerAccess, Reading],
                  wall: datetime.datetime) -> bool:
        quiet = self.quiet
        return (quiet is not None and quiet.revision == revision
                and quiet.readings == readings
                and holds(quiet.at, quiet.until, wall)
                and not self.unpublished and not self.runtime.settling()
                and (self.shrinker is None or self.shrinker.settled))

    async def cycle(self) -> None:
        await self.learner.learn(self.runtime, self.bodies)
        # Read before anything else: a change made while this cycle runs makes the next
        # one walk every pool again.
        revision = self.runtime.revision
        groups = self._groups(revision)
        for stale in set(self.probes) - set(groups):
            with Boundary(f"closing the probe of {stale.display}", AUTOSCALING_FAILED,
                          secrets_of(stale)):
                await self.probes.pop(stale).close()
        accesses = list(groups)
        measurements = await asyncio.gather(*(
            self._measure(a, {q for member in groups[a] for q in member.pool.queues})
            for a in accesses))
        readings = {access: Reading.of(measurement)
                    for access, measurement in zip(accesses, measurements, strict=True)}
        wall = self.wall()
        if self.began is None:
            self.began = wall
        if self._is_quiet(revision, readings, wall):
            self.quiet_at = self.clock()
        else:
            self.quiet = None
            if await self._walk(groups, accesses, measurements, wall):
                self.quiet = Quiet(revision, readings, min(
                    (until for until in [*(w.until for w in self.windows.values()),
                                         *(w.until for w in self.warms.values())]
                     if until is not None),
                    default=None), wall)
        self._ask()

    async def _walk(self, groups: dict[BrokerAccess, list[Member]],
                    accesses: list[BrokerAccess], measurements: list[Measurement],
                    wall: datetime.datetime) -> bool:
        """Decide every pool (those at rest with the same inputs cost a comparison), each
        inside a boundary, :data:`OBJECTS_AT_ONCE` objects side by side; then write the
        statuses that changed, side by side too. True when every pool is left at rest
        and every step and write went through."""
        seen: set[str] = set()
        scaled: set[tuple[str, str]] = set()
        # Ordered, so statuses are written in a stable order; kept until written.
        changed = self.unpublished
        series: dict[metrics.PoolSeries, set[str]] = {}
        # Objects whose lock was not had in time: their status is written next cycle.
        busy: set[Key] = set()
        order = self._order(groups, accesses, measurements)
        self.unreached = {(m.fleet.uid, m.pool.name): None
                          for walked in order for m in walked.members}
        for walked in order:
            for member in walked.members:
                seen.add(member.fleet.uid)
                series[pool_series(member.key, member.pool)] = (
                    set() if walked.measurement.depths is None else set(member.pool.queues))
                scaled.add((member.fleet.uid, member.pool.name))
        calm = all(await side_by_side(
            order, lambda walked: self._step_contained(walked, wall, changed, busy),
            OBJECTS_AT_ONCE))
        # Only objects whose measurements changed need their status rendered again.
        writing = [key for key in changed if key not in busy]  # the busy ones: next cycle
        calm = calm and len(writing) == len(changed)
        calm = all(await side_by_side(writing, self._write, OBJECTS_AT_ONCE)) and calm
        if self.unwritten:
            self.unwritten &= set(self.runtime.fleets)
        # Forget pools of objects that are gone, and their series; workers of pools no
        # longer scaled that were draining consume again.
        self.history = {k: v for k, v in self.history.items() if k[0] in seen}
        self.throughput = {k: v for k, v in self.throughput.items() if k[0] in seen}
        self.resting = {k: v for k, v in self.resting.items() if k[0] in seen}
        self.windows = {k: v for k, v in self.windows.items() if k[0] in seen}
        self.beats = {k: v for k, v in self.beats.items() if k in seen}
        self.warms = {k: v for k, v in self.warms.items() if k in scaled}
        self.starts = {k: v for k, v in self.starts.items() if k in scaled}
        self.told = {k: v for k, v in self.told.items() if k in seen}
        self.marked = {k: v for k, v in self.marked.items() if k[0] in seen}
        self.questions = {k: v for k, v in self.questions.items() if k in scaled}
        retained = Retained(series, {broker_series(access) for access in accesses})
        if retained != self.retained:
            metrics.retain(retained.pools, retained.brokers)
            self.retained = retained
        with Boundary("giving back the workers of pools no longer scaled",
                      AUTOSCALING_FAILED) as boundary:
            await self._shrinker().abandon(scaled, [
                Known(key.namespace, key.name, state.fleet, state.access)
                for key, state in list(self.runtime.fleets.items())])
        return calm and boundary.fault is None

    async def _write(self, key: Key) -> bool:
        """Write the object's status (:meth:`_publish`). Taken off the pending ones before
        it is rendered: a change recorded meanwhile (by a round of questions) puts it
        back; put back too unless written (cancelled, failed)."""
        self.unpublished.pop(key, None)
        written = False
        try:
            written = await self._publish(key)
        finally:
            if not written:
                self.unpublished[key] = None
        return written

    async def _step_contained(self, walked: Walked, wall: datetime.datetime,
                              changed: dict[Key, None], busy: set[Key]) -> bool:
        """:meth:`_step_object`, whatever escapes it (a defect: each step contains its
        own failures) logged and kept to this object: the objects stepped beside it go
        on, and its pools are walked first next cycle."""
        try:
            return await self._step_object(walked, wall, changed, busy)
        except Exception:
            log.exception("autoscaling %s/%s failed", *walked.key)
            for member in walked.members:
                self.unreached[(member.fleet.uid, member.pool.name)] = None
            return False

    async def _step_object(self, walked: Walked, wall: datetime.datetime,
                           changed: dict[Key, None], busy: set[Key]) -> bool:
        """One object's part of the walk: its pools one after the other, then what its
        broker's answer shows it. An object whose lock was not had in time, or one of
        whose steps outlasts its share and goes on beside the cycles (``busy``, its
        status written once it can be), costs the walk one share at most: its other
        pools wait for a later cycle, walked first. True when every pool is left at
        rest."""
        key = walked.key
        calm = True
        for member in walked.members:
            pool_key = (member.fleet.uid, member.pool.name)
            self.unreached.pop(pool_key, None)
            if key in self.stepping:
                busy.add(key)
            if key in busy:  # walked first once it is free
                self.unreached[pool_key] = None
                calm = False
                continue
            step = self.stepping[key] = Step(pool_key)
            step.task = asyncio.create_task(self._step_limited(member, walked, wall, changed,
                                                               busy, step))
            try:
                await asyncio.wait({step.task}, timeout=self.step_limit)
                if not step.task.done() and sum(
                        not other.waited for other in self.stepping.values()) >= LATE_AT_ONCE:
                    await asyncio.wait({step.task})  # enough go on beside the cycles
            finally:  # also when this walk is cancelled: the step goes on to its end
                if step.task.done():
                    self._forget(key, step)
                else:
                    step.waited = False
            if not step.waited:
                log.info("%s/%s: pool %s's step goes on beside the cycles (longer than "
                         "%g s)", key.namespace, key.name, member.pool.name, self.step_limit)
                busy.add(key)  # its other pools, and its status, wait for it
                calm = False
                continue
            calm = step.task.result() and calm
        with Boundary(BROKER_STEP, AUTOSCALING_FAILED, walked.secrets) as boundary:
            if await self._broker_state(key, walked.measurement.error):
                changed[key] = None
            if self._unconsumed_state(key, walked.orphans):
                changed[key] = None
        if await self._settle(key, BROKER_STEP, walked.orphans_fault or boundary.fault):
            changed[key] = None
        return calm

    async def _step_limited(self, member: Member, walked: Walked, wall: datetime.datetime,
                            changed: dict[Key, None], busy: set[Key], step: Step) -> bool:
        """:meth:`_step_settled`; a step no walk waits for any more ends itself: what
        escaped it logged, its object's status written, then forgotten (until then
        :meth:`close` stops it)."""
        key = member.key
        at_rest = False
        try:
            try:
                at_rest = await self._step_settled(member, walked, wall, changed, busy)
            except Exception:
                if step.waited:
                    raise  # the walk's (_step_contained)
                log.exception("autoscaling %s/%s failed", *key)
                self.unreached[step.pool] = None
                self.unpublished[key] = None
            if not step.waited and key in self.unpublished:
                await self._write(key)  # its fault, say, before its next step holds the lock
        finally:
            if not step.waited:
                self._forget(key, step)
        return at_rest

    async def _step_settled(self, member: Member, walked: Walked, wall: datetime.datetime,
                            changed: dict[Key, None], busy: set[Key]) -> bool:
        """One pool's step inside its boundary and within :attr:`late_limit`, how it
        ended settled (unless its object is gone meanwhile); True when the pool is left
        at rest."""
        key, pool = member.key, member.pool
        at_rest = False
        with Boundary(POOL_STEP + pool.name, AUTOSCALING_FAILED, walked.secrets,
                      expected=(KubeError, Overrun)) as boundary:
            try:
                async with asyncio.timeout(self.late_limit):
                    at_rest = await self._step_pool(member, walked.access, walked.measurement,
                                                    wall, walked.secrets, changed, busy)
            except TimeoutError:
                raise Overrun(f"took longer than {self.late_limit:g} s; held at its size "
                              "until the next cycle") from None
        if self._same(member) and await self._settle(key, POOL_STEP + pool.name,
                                                     boundary.fault):
            changed[key] = None
        return at_rest

    def _same(self, member: Member) -> bool:
        """Whether the object a pool's step was for is still there: not deleted, nor
        created again under its name (a step beside the cycles may outlive it)."""
        state = self.runtime.fleets.get(member.key)
        return state is not None and state.uid == member.fleet.uid

    def _forget(self, key: Key, step: Step) -> None:
        if self.stepping.get(key) is step:
            del self.stepping[key]

    def _order(self, groups: dict[BrokerAccess, list[Member]], accesses: list[BrokerAccess],
               measurements: list[Measurement]) -> list[Walked]:
        """The walk's order, by object: first those the last walk did not step, in the
        order it left them, and those with messages waiting that their pools' last
        decision did not see (a burst), so that the work of quiet pools (a first look
        after a restart) never holds up a decision that adds workers, and a walk cut
        short by many busy pools does not leave the same tail unstepped every cycle;
        then as grouped."""
        rank = {pool_key: n for n, pool_key in enumerate(self.unreached)}

        def place(member: Member) -> int:
            return rank.get((member.fleet.uid, member.pool.name), len(rank))

        order: list[tuple[bool, int, Walked]] = []
        for access, measurement in zip(accesses, measurements, strict=True):
            members = groups[access]
            orphans, secrets = None, secrets_of(access)
            with Boundary(BROKER_STEP, AUTOSCALING_FAILED, secrets) as broker:
                orphans = None if measurement.unconsumed is None else unconsumed_queues(
                    (q for member in members for q in member.pool.queues),
                    measurement.unconsumed)
            by_object: dict[Key, list[Member]] = defaultdict(list)
            for member in members:
                by_object[member.key].append(member)
            for key, pools in by_object.items():
                ranked = tuple(sorted(pools, key=place))
                first = any(self._bursting(member, measurement)
                            or (member.fleet.uid, member.pool.name) in rank
                            for member in ranked)
                order.append((not first, place(ranked[0]), Walked(
                    key, access, measurement, secrets, ranked, orphans, broker.fault)))
        order.sort(key=lambda entry: entry[:2])
        return [walked for _, _, walked in order]

    def _bursting(self, member: Member, measurement: Measurement) -> bool:
        """Whether messages wait for the pool that its last decision at rest did not
        see (or it has none: new to this process, or still moving)."""
        depths = measurement.of_pool(member.pool)
        if depths is None:
            return False
        backlog = backlog_of(member.pool, depths)
        rest = self.resting.get((member.fleet.uid, member.pool.name))
        return backlog > 0 and (rest is None or rest.inputs.backlog != backlog)

    async def _step_pool(self, member: Member, access: BrokerAccess,
                         measurement: Measurement, wall: datetime.datetime,
                         secrets: list[str], changed: dict[Key, None], busy: set[Key]
                         ) -> bool:
        """One pool's step of the cycle: its queues' fault, its inputs, and its decision
        unless it is at rest with the same inputs. Its object goes in ``changed`` when
        what its status shows changed, in ``busy`` when its lock was not had in time;
        True when the pool is left at rest."""
        key, pool = member.key, member.pool
        if await self._settle(key, QUEUES_STEP + pool.name,
                              unmeasured(pool, measurement.failed, secrets)):
            changed[key] = None
        depths = measurement.of_pool(pool)
        inputs = self._inputs(member, depths, wall)
        if inputs is None:  # not created yet: the reconciler will
            return False
        await self._tell_ignored(member)
        pool_key = (member.fleet.uid, pool.name)
        rest = self.resting.get(pool_key)
        state = self.runtime.fleets.get(key)
        if (rest is not None and rest.inputs == inputs
                and rest.listed == (state is not None and state.listed)):
            rest.seen = self.clock()
            # Its gauges already show these figures unless a queue's changed.
            shown = pool_depths(pool, depths)
            if shown != rest.recorded:
                record_pool(pool_series(key, pool), pool, depths, inputs.backlog,
                            inputs.current, inputs.current)
                rest.recorded = shown
            return True
        lock = self.runtime.locks.get(key)
        if lock is None:  # deleted meanwhile
            return True
        async with self._held(lock) as held:
            if not held:  # a long reconcile holds the object: tried again next cycle
                busy.add(key)
                log.info("%s/%s is busy; its pools are decided next cycle", key.namespace,
                         key.name)
                return False
            if self._current(member) and await self._scale_pool(
                    key, member.fleet, pool, access, measurement.source, depths, inputs):
                changed[key] = None
        return pool_key in self.resting

    async def _settle(self, key: Key, step: str, fault: Fault | None) -> bool:
        """Record how one of the object's steps ended, with a Warning event for a new
        fault; True when what its status shows changed."""
        return await self.runtime.settle(key, step, fault)

    async def _publish(self, key: Key) -> bool:
        """Write the object's status; True when written (or nothing to write), False
        when it is to be tried again next cycle: its lock could not be had in time, or
        the write failed. A failure is logged and announced by one Warning event while it
        lasts, never kept as a fault: the next write that succeeds would show it, and
        the one after clear it (Ready flapping for one slow request)."""
        state = self.runtime.fleets.get(key)
        lock = self.runtime.locks.get(key)
        if state is None or lock is None:
            self.unwritten.discard(key)
            return True
        secrets = secrets_of(state.access) if state.access is not None else []
        held = False
        with Boundary(STATUS_STEP, STATUS_FAILED, secrets, expected=(KubeError,)) as boundary:
            async with self._held(lock) as held:
                if held:
                    await self.runtime.publish(key, self.deployments_of(key))
        fault = boundary.fault
        if fault is None:
            if held:
                self.unwritten.discard(key)
            return held
        if key not in self.unwritten:
            self.unwritten.add(key)
            await self._event(key, "Warning", fault.reason,
                              f"{fault.step}: {fault.message}; tried again next cycle")
        return False

    async def _broker_state(self, key: Key, error: str | None) -> bool:
        """Record whether the broker answered; True when that changed. Not for an object
        known from the index alone: what its status last said is not known yet."""
        state = self.runtime.fleets.get(key)
        if state is None or state.listed or error == state.broker_error:
            return False
        if error and not state.broker_error:
            await self._event(key, "Warning", "BrokerUnreachable",
                              f"{error}; holding every pool at its size")
        elif state.broker_error and not error:
            await self._event(key, "Normal", "BrokerReachable", "the broker answers again")
        state.broker_error = error
        return True

    def _unconsumed_state(self, key: Key, orphans: list[str] | None) -> bool:
        """Record the broker's queues nobody consumes; True when that changed (not for an
        object known from the index alone, as :meth:`_broker_state`)."""
        state = self.runtime.fleets.get(key)
        found = None if orphans is None else tuple(orphans)
        if state is None or state.listed or state.unconsumed == found:
            return False
        state.unconsumed = found
        return True

    async def _event(self, key: Key, kind: str, reason: str, message: str) -> None:
        state = self.runtime.fleets.get(key)
        uid = state.uid if state else None
        await self.runtime.kube.event({"namespace": key.namespace, "name": key.name, "uid": uid},
                                      kind, reason, message)

    def _inputs(self, member: Member, depths: Mapping[str, QueueDepth] | None,
                wall: datetime.datetime) -> Inputs | None:
        """What the pool's decision depends on now (``depths`` None: not measured); None
        while its Deployment is missing."""
        fleet, pool = member.fleet, member.pool
        name = pool_deployment_name(fleet, pool)
        dep = self.deployments_of(member.key).get(name)
        if dep is None:
            return None
        return Inputs(
            generation=member.generation,
            current=self.runtime.replicas(member.key, name, dep.replicas), ready=dep.ready,
            backlog=None if depths is None else backlog_of(pool, depths),
            stale=None if depths is None else sum(
                depths[queue].stale for queue in pool.queues if queue in depths),
            window=self._window(fleet, pool, wall),
            warm_up=self._warm_up(member, wall), pods=f"{dep.spec_hash}/{dep.foreign}")

    def _warm_up(self, member: Member, wall: datetime.datetime) -> Outlook | None:
        """The pool's warm-up before its fleet's beat (None: off, or no beat), evaluated
        again only when it may change: a new spec, a new lead, or its ``until``."""
        fleet, pool = member.fleet, member.pool
        pool_key = (fleet.uid, pool.name)
        beat = self._beat(member)
        if beat is None or not pool.autoscaling.warm_up.enabled or self._scheduler_held(member):
            self.warms.pop(pool_key, None)
            return None
        lead = waves.lead_seconds(self.starts.get(pool_key, ()),
                                  self.runtime.config.poll_seconds)
        warm = self.warms.get(pool_key)
        if warm is None or warm.generation != member.generation or warm.lead != lead or (
                not holds(warm.at, warm.until, wall)):
            replicas = min(pool.autoscaling.warm_up.replicas, pool.max_replicas)
            warm = Warm(member.generation, lead, waves.warming(
                beat, pool.queues, replicas, wall, lead, pool.min_replicas), wall)
            self.warms[pool_key] = warm
        return warm.warming.outlook

    def _scheduler_held(self, member: Member) -> bool:
        """Whether the fleet's scheduler is held back (no Redis for its lock, its lock's
        Secret missing): no beat runs, no wave comes."""
        state = self.runtime.fleets.get(member.key)
        # Known from the index alone: its Secrets not looked at yet, its beat may be held.
        return state is not None and (state.listed or state.held is not None or any(
            held.part == Part.SCHEDULER for held in state.held_parts))

    def _beat(self, member: Member) -> Beat | None:
        """The fleet's effective beat schedule, read once per spec. Whatever it cannot
        read costs the fleet its warm-up (named in its status), never its scaling."""
        fleet = member.fleet
        known = self.beats.get(fleet.uid)
        if known is None or known.generation != member.generation:
            try:
                beat = waves.beat_of(fleet)
            except Exception as err:
                log.exception("%s/%s: the beat schedule could not be read", fleet.namespace,
                              fleet.name)
                beat = Beat(ignored=(f"the beat schedule could not be read: "
                                     f"{type(err).__name__}",))
            known = self.beats[fleet.uid] = KnownBeat(member.generation, beat)
        return known.beat

    async def _tell_ignored(self, member: Member) -> None:
        """One Warning event per fleet when the beat entries its warm-up cannot evaluate
        change (and are not none), whichever of its pools warms up."""
        fleet = member.fleet
        beat = self._beat(member) if any(
            pool.autoscaling.enabled and pool.autoscaling.warm_up.enabled
            for pool in fleet.pools) else None
        ignored = beat.ignored if beat is not None else ()
        if self.told.get(fleet.uid, ()) == ignored:
            return
        self.told[fleet.uid] = ignored
        if ignored:
            await self._event(member.key, "Warning", "BeatEntryIgnored",
                              "not warmed for: " + "; ".join(ignored))

    def _window(self, fleet: Fleet, pool: Pool, wall: datetime.datetime) -> Window | None:
        """The pool's open schedule window, evaluated again only when it may change."""
        schedules = pool.autoscaling.schedules
        if not schedules:
            return None
        cached = self.windows.get((fleet.uid, pool.name))
        if cached is None or cached.schedules != schedules or not holds(
                cached.at, cached.until, wall):
            cached = OpenWindow(schedules, active_window(schedules, wall),
                                next_change(schedules, wall), wall)
            self.windows[(fleet.uid, pool.name)] = cached
        return cached.window

    async def _scale_pool(self, key: Key, fleet: Fleet, pool: Pool, access: BrokerAccess,
                          source: str | None, depths: Mapping[str, QueueDepth] | None,
                          inputs: Inputs) -> bool:
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
        history = self.history.get(pool_key, History())
        rest = self.resting.pop(pool_key, None)
        if rest is not None:
            # Quiet cycles found its inputs unchanged too, without looking.
            seen = max(rest.seen, self.quiet_at or rest.seen)
            history = decide(rest.bounds, rest.inputs.current, rest.inputs.backlog, seen,
                             history).history
        bounds, sized = self._bounds(fleet, pool, inputs)
        warm = self.warms.get(pool_key) if inputs.warm_up is not None else None
        bounds = waves.raised(bounds, warm.warming if warm is not None else None)
        decision = decide(bounds, current, backlog, self.clock(), history)
        self.history[pool_key] = decision.history
        state = self.runtime.fleets[key]  # present: checked under the lock
        previous = state.scaling.get(pool.name)
        target, reason = decision.replicas, decision.reason
        if state.listed:
            # Known from the index alone: what else keeps it at its size (a warm-up, a
            # held part) is its reconcile's to bring, so until then it only grows.
            target = max(target, current)
        if can_broadcast(access):
            outcome = await self._shrinker().step(
                fleet, pool, access, current, target,
                lambda kind, why, message: self._event(key, kind, why, message))
        else:  # SQS: no broadcast, no drain; the ReplicaSet controller picks (module doc)
            outcome = Outcome(target)
        if self.runtime.fleets.get(key) is not state:
            # Deleted while the drains were looked at (its lock does not stop that): its
            # Deployment's name may be a new object's by now.
            return False
        target, reason = outcome.replicas, reason + outcome.note
        timed_out = outcome.timed_out or (previous.drain_timed_out if previous else None)
        scale = PoolScale(backlog=backlog, source=source,
                          desired=decision.replicas,
                          last_scale_time=previous.last_scale_time if previous else None,
                          last_scale_reason=previous.last_scale_reason if previous else None,
                          stale_in_flight=inputs.stale, draining=outcome.draining,
                          drain_timed_out=timed_out, window=window,
                          warm_up=inputs.warm_up,
                          throughput_per_pod=_rounded(sized.per_pod),
                          arrival_rate=_rounded(sized.arrival_rate), policy=sized.policy)
        cause = scale_reason(backlog, pool)
        # SQS has no broadcast: its workers cannot be asked. The others are asked after
        # the cycle (see _ask).
        if can_broadcast(access) and depths is not None and worth_asking(
                current, (_may_hold_work(depths.get(q)) for q in pool.queues),
                self.marked.get(pool_key)):
            self.questions[pool_key] = Question(key, fleet, pool, access)
        if target != current:
            await self._resize(key, pool, name, current, target, reason, cause)
            scale = replace(scale, last_scale_time=now(), last_scale_reason=reason)
        elif (decision.replicas == current and at_rest(decision.history, current)
              and outcome.settled  # a drain record to finish or undo: not at rest
              and not sized.arrival_rate):  # status shows the last minute's: until 0
            self.resting[pool_key] = Rest(inputs, bounds, self.clock(),
                                          pool_depths(pool, depths), state.listed)
        record_pool(pool_series(key, pool), pool, depths, backlog, decision.replicas, current)
        # Known from the index alone, the pool left at its size: what its status shows
        # of it is its reconcile's to bring (publish.publish), this decision not.
        if scale == previous or (state.listed and target == current):
            return False
        state.scaling[pool.name] = scale
        return True

    def _bounds(self, fleet: Fleet, pool: Pool, inputs: Inputs) -> tuple[Bounds, Sized]:
        """The pool's bounds with what raises them now: the backlog target the service
        time asks for (from the throughput and arrivals measured so far of the pods it
        runs now; nothing kept without a wait) and the minimum of an open schedule
        window. Also returns the policy in force, for status."""
        wait, pool_key = pool.autoscaling.target_wait_seconds, (fleet.uid, pool.name)
        seen = of_pods(self.throughput.pop(pool_key, Throughput()), inputs.pods)
        if wait and inputs.backlog is not None:
            seen = observe(seen, Sample(self.clock(), inputs.backlog, inputs.ready,
                                        pool.concurrency))
        if wait:
            self.throughput[pool_key] = seen
        sized = for_wait(Bounds.of(pool), pool.concurrency, wait, seen)
        return raised(sized.bounds, inputs.window), sized

    async def _resize(self, key: Key, pool: Pool, name: str, current: int, target: int,
                      reason: str, cause: metrics.ScaleReason) -> None:
        await self.runtime.kube.scale(key.namespace, name, target)
        self.runtime.note_scale(key, name, target)
        direction = "up" if target > current else "down"
        metrics.scale_events.labels(key.namespace, key.name, pool.name, direction,
                                     cause).inc()
        await self._event(key, "Normal", f"Scaled{direction.capitalize()}",
                          f"pool {pool.name}: {current} -> {target} pods ({reason})")

    def _ask(self) -> None:
        """Start a round of questions for the pools that want one, unless a round still
        runs: the workers' answers, or their silence, never hold a cycle."""
        if not self.questions or (self.asking is not None and not self.asking.done()):
            return
        questions, self.questions = list(self.questions.values()), {}
        self.asking = asyncio.create_task(self._mark_running(questions))

    async def _mark_running(self, questions: list[Question]) -> None:
        """Ask the workers of ``questions``' pools what they run, within one budget: their
        pods listed side by side, the workers that can answer asked in one broadcast per
        broker (a few brokers at a time), the busy pods marked not safe to evict and the
        idle ones unmarked. A worker not asked or not answering keeps its marks."""
        try:
            async with asyncio.timeout(ASK_BUDGET):
                listed = [found for found in await side_by_side(
                    questions, self._listed, LISTINGS_AT_ONCE) if found]
                by_broker: dict[tuple[BrokerAccess, str], list[Listed]] = defaultdict(list)
                for found in listed:
                    by_broker[found.broker].append(found)
                answers = await side_by_side(
                    list(by_broker.values()), self._broadcast, BROADCASTS_AT_ONCE)
                await asyncio.gather(*(
                    self._mark(found, active)
                    for pools, active in zip(by_broker.values(), answers, strict=True)
                    for found in pools))
        except TimeoutError:
            log.warning("the workers of %d pools did not answer within %g s; their marks "
                        "stay", len(questions), ASK_BUDGET)

    async def _listed(self, question: Question) -> Listed | None:
        """The pool's pods and how to reach them; None when that failed (a fault)."""
        fleet, pool = question.fleet, question.pool
        with Boundary(MARKS_STEP + pool.name, AUTOSCALING_FAILED, secrets_of(question.access),
                      expected=(KubeError,)) as boundary:
            options = transport_options(celery_settings(fleet))
            pods = await self.runtime.kube.list_pods(
                fleet.namespace, selector_labels(fleet, "worker", pool.name))
            measured = {name: pod.start_seconds for name, pod in pods.items()
                        if pod.start_seconds is not None and pod.created is not None
                        and self.began is not None and pod.created >= self.began}
            pool_key = (fleet.uid, pool.name)
            self.starts[pool_key] = waves.observe_starts(self.starts.get(pool_key, ()),
                                                         measured)
            return Listed(question, pods, options)
        await self._settle_marks(question, boundary.fault)
        return None

    async def _broadcast(self, pools: list[Listed]) -> dict[str, int] | None:
        """One question to every worker that can answer on one broker (the shrinker's
        way of reaching them): tasks running by hostname; None when they cannot be asked."""
        hosts = [host for found in pools for host in found.answering]
        if not hosts:
            return {}
        first = pools[0]
        with Boundary(f"asking the workers on {first.question.access.display}",
                      AUTOSCALING_FAILED, secrets_of(first.question.access)) as boundary:
            control = self._shrinker().control_for(first.question.access, first.options)
            return await active_tasks(control, hosts)
        for found in pools:
            await self._settle_marks(found.question, boundary.fault)
        return None

    async def _mark(self, found: Listed, active: Mapping[str, int] | None) -> None:
        """Patch the pool's marks from the answers (None: nobody could be asked)."""
        question = found.question
        fleet, pool = question.fleet, question.pool
        annotations = {name: pod.annotations for name, pod in found.pods.items()}
        with Boundary(MARKS_STEP + pool.name, AUTOSCALING_FAILED, secrets_of(question.access),
                      expected=(KubeError,)) as boundary:
            if active is None:  # cannot ask: the marks stay as they are
                marked = frozenset(pod for pod, current in annotations.items()
                                   if carries_marks(current))
            else:
                running = {pod: active[host] for pod in found.pods
                           if (host := hostname(pool.name, pod)) in active}
                marks = eviction_marks(annotations, running)
                for pod, patch in marks.patches.items():
                    await self.runtime.kube.annotate_pod(fleet.namespace, pod, patch)
                marked = marks.marked
            self.marked[(fleet.uid, pool.name)] = marked
        if active is not None or boundary.fault is not None:
            await self._settle_marks(question, boundary.fault)

    async def _settle_marks(self, question: Question, fault: Fault | None) -> None:
        """Record how the marks of a pool ended; its status is written next cycle."""
        state = self.runtime.fleets.get(question.key)
        if state is None or state.uid != question.fleet.uid:  # gone, or another object
            return
        if await self._settle(question.key, MARKS_STEP + question.pool.name, fault):
            self.unpublished[question.key] = None


def _rounded(figure: float | None) -> float | None:
    """A learned figure as status shows it."""
    return None if figure is None else round(figure, 3)


def _may_hold_work(depth: QueueDepth | None) -> bool:
    """Whether a queue may have tasks for the workers (an unknown in-flight count may)."""
    if depth is None:
        return False
    return depth.waiting > 0 or depth.in_flight is None or depth.in_flight > 0
