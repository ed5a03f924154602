"""Shrinking a pool: drain before delete, wired to the Kube edge and the workers' control.

Each autoscaling cycle, for a pool that must shrink (or has drain records), the
:class:`Shrinker` picks workers to retire and stops their consumers, looks at what the
draining ones still hold, gives up on drains past their timeout (the worker consumes
again; a Warning event ``DrainTimedOut`` and the pool's status say so), and returns the
size the Deployment may take now: lower only by the drained pods, which get the lowest
pod-deletion cost a cycle before so the ReplicaSet controller removes exactly them
(``autoscale/drainplan.py`` says when that holds; otherwise the pool waits a cycle).

Drains are recorded intent. A drain is written on its pod first (the annotation
``metamapper.io/draining``: when it started and the queues it stops, see
``drainplan.DrainRecord``), and only then is its worker told to stop consuming; the record
is removed only once the worker has confirmed it consumes again (or with its pod). So
whatever fails half-way (the annotation refused, a control call failing or timing out, the
cycle cancelled, the leadership lost) leaves at worst a record and a worker that may have
stopped, never a stopped worker nobody knows of. Every step of a pool with records lists
its pods and reconciles the records with them and with the workers:

- a record the step does not know (a predecessor's, or one a failed step wrote) is a
  drain again, with the time its start leaves it, and its worker is told to stop again
  (``cancel_consumer`` is idempotent) until it confirms;
- a record beyond what the pool must lose (the pool no longer shrinks, or a burst wants
  workers back) is a stray: its worker is given the record's queues back, again every
  step until it confirms;
- a record on a pod that ended (evicted: phase Failed) is forgotten: no worker runs there
  and the ReplicaSet controller has replaced the pod.

A worker that holds only tasks waiting for their ETA counts as drained: its warm shutdown
gives them back to the broker (``autoscale/drainplan.py`` says why and how), so a pool
whose workers all hold some still shrinks. An API error holds a shrinking pool; a growing
one never waits on its drains.

A record's pod also carries the label ``metamapper.io/draining``, so that what an earlier
operator left is found with one small listing per namespace (the pods with that label), the
first time a pool of the namespace is stepped, not with a listing per pool: at start every
pool is stepped, and thousands of listings would hold up the first cycle. (A mark from
before records carried the label is found when its pool is next listed: when it is resized.)
Then pools without records cost nothing; a pool's pods are listed only while it shrinks or
has records (:attr:`Outcome.settled`, :attr:`Shrinker.settled`). The workers are reached
with the fleet's current credentials: the control is made again when the broker access
given to a step differs from the one it was made with (a rotated Secret).

Undoing a drain is bounded. A worker that cannot answer (its pod not Running and ready)
is not asked; one that can is asked again after a wait that doubles each time (from
:data:`RESUME_BACKOFF_FIRST` to :data:`RESUME_BACKOFF_MAX`), and a pool whose records all
wait is not even listed until the first of them is due. A resume still unconfirmed after
:data:`RESUME_LIMIT` (remote control disabled, a pod crash-looping or lost with its node)
is given up: its record is removed and one Warning event ``DrainAbandoned`` names the pod
and why. Until then its worker counts as not serving and is not picked again (a new
record would restart the time). This leaves no worker stopped for good: one that starts
again consumes every queue of its command line, and one whose remote control is off never
acted on the stop either.

Records of pools no longer stepped (autoscaling off, the fleet paused, suspended, invalid,
or gone) are undone by :meth:`Shrinker.abandon`: with the fleet's broker access when the
fleet is known and has one; otherwise the record alone is removed (the pod goes with its
fleet, or its fleet cannot be reached).

Pools on SQS are not drained: there is no broadcast to reach a worker by. They shrink the
plain way (the ReplicaSet controller picks the pods; SIGTERM; Celery's warm shutdown
finishes what it runs within the grace period; a task cut off at the end of it is
delivered again by SQS once its visibility timeout expires, thanks to late acks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from metamapper_operator.autoscale.drain import ControlError, WorkerControl
from metamapper_operator.autoscale.drainplan import (
    DELETION_COST,
    DRAINED_COST,
    Draining,
    DrainRecord,
    Load,
    WorkerPod,
    drain_timeout,
    exact_removal,
    hostname,
    pick,
    review,
)
from metamapper_operator.builders import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_NAME,
    LABEL_POOL,
    celery_settings,
    selector_labels,
)
from metamapper_operator.kube import Kube, KubeError
from metamapper_operator.model import Fleet, Pool, transport_options
from metamapper_operator.references import BrokerAccess

DRAINING = "metamapper.io/draining"   # the annotation (the record) and the label
RECORDED = "true"                      # the label's value
log = logging.getLogger(__name__)

Report = Callable[[str, str, str], Awaitable[None]]   # (event type, reason, message)
ControlFor = Callable[[BrokerAccess, Mapping[str, object]], WorkerControl]

RESUME_LIMIT = 600.0          # seconds a resume may go unconfirmed before it is given up
RESUME_BACKOFF_FIRST = 10.0   # the first wait before asking (or looking) again
RESUME_BACKOFF_MAX = 120.0


@dataclass(frozen=True, slots=True)
class Known:
    """A Metamapper the operator knows of: its fleet (None while invalid) and the broker
    access its workers are reached with (None when it has none)."""

    namespace: str
    name: str
    fleet: Fleet | None
    access: BrokerAccess | None


@dataclass(frozen=True, slots=True)
class Resuming:
    """A record being undone: since when (the shrinker's clock), and when its worker is
    asked (or looked at) next, after how long a wait."""

    since: float
    due: float
    wait: float = 0.0

    def later(self, now: float) -> Resuming:
        wait = min(max(2 * self.wait, RESUME_BACKOFF_FIRST), RESUME_BACKOFF_MAX)
        return Resuming(self.since, now + wait, wait)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a shrinking step allows now and what status shows of it."""

    replicas: int
    note: str = ""                      # appended to the scale reason
    draining: tuple[str, ...] = ()
    timed_out: str | None = None        # the latest drain given up, if one was this step
    # No drain record of the pool is left to finish or undo: the pool may rest.
    settled: bool = True


@dataclass(slots=True)
class PoolDrains:
    """The drain records of one pool as the last step found them, and how to reach its
    workers. Every record is in exactly one of: ``drains`` (being drained), ``removing``
    (drained, the replicas lowered: its pod is on its way out) or neither (to be given its
    queues back: :attr:`resuming`)."""

    namespace: str
    pool: str
    selector: Mapping[str, str]
    queues: tuple[str, ...]
    access: BrokerAccess
    options: Mapping[str, object]
    control: WorkerControl
    records: dict[str, DrainRecord] = field(default_factory=dict)
    drains: dict[str, Draining] = field(default_factory=dict)
    unstopped: set[str] = field(default_factory=set)   # drains not confirmed stopped
    removing: set[str] = field(default_factory=set)
    resumes: dict[str, Resuming] = field(default_factory=dict)

    @property
    def resuming(self) -> list[str]:
        return sorted(set(self.records) - set(self.drains) - self.removing)

    def resting(self, now: float) -> bool:
        """Every record is being undone and none is due: nothing to list or ask now."""
        names = self.resuming
        return (len(names) == len(self.records) > 0
                and all(name in self.resumes and now < self.resumes[name].due
                        for name in names))

    def note(self, name: str, record: DrainRecord, drain: Draining) -> None:
        self.records[name], self.drains[name] = record, drain
        self.unstopped.add(name)
        self.removing.discard(name)
        self.resumes.pop(name, None)

    def give_back(self, names: Collection[str]) -> None:
        for name in names:
            self.drains.pop(name, None)
            self.unstopped.discard(name)
            self.removing.discard(name)

    def forget(self, name: str) -> None:
        self.records.pop(name, None)
        self.resumes.pop(name, None)
        self.give_back([name])

    def sync(self, pods: Mapping[str, WorkerPod], now: float, wall: float,
             timeout: float) -> None:
        """Take the records as the pods carry them: forget those gone (with their pod, or
        never written), and drain again those this shrinker did not know of."""
        found = {name: DrainRecord.decode(pod.annotations[DRAINING], self.queues)
                 for name, pod in pods.items() if pod.annotations.get(DRAINING)}
        for name in set(self.records) - set(found):
            self.forget(name)
        for name, record in found.items():
            if name not in self.records:
                self.note(name, record, Draining(name, now,
                                                 now + record.remaining(timeout, wall)))

    def hosts(self, pods: Sequence[str]) -> list[str]:
        return [hostname(self.pool, pod) for pod in pods]

    def by_pod(self, found: Mapping[str, Load]) -> dict[str, Load]:
        prefix = f"{self.pool}@"
        return {host.removeprefix(prefix): load for host, load in found.items()
                if host.startswith(prefix)}

    def by_queues(self, names: Sequence[str]) -> dict[tuple[str, ...], list[str]]:
        """The pods grouped by the queues their records name (one control call each)."""
        groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for name in names:
            groups[self.records[name].queues].append(name)
        return groups


@dataclass
class Shrinker:
    kube: Kube
    clock: Callable[[], float]
    # The wall clock, for the start of a drain as its record says it to other operators.
    wall: Callable[[], float] = time.time
    # How to reach a broker's workers (given in the wiring tests).
    control_for: ControlFor = WorkerControl
    pools: dict[tuple[str, str], PoolDrains] = field(default_factory=dict)  # (uid, pool)
    adopted: set[tuple[str, str]] = field(default_factory=set)
    # Namespaces looked for records in, and the pools (namespace, object, pool) found to
    # have some there that are not adopted yet.
    scanned: set[str] = field(default_factory=set)
    recorded: set[tuple[str, str, str]] = field(default_factory=set)
    # One look per namespace, however many of its pools are stepped side by side.
    scanning: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock))

    @property
    def settled(self) -> bool:
        """No pool, scaled or not, has a drain record to finish or undo."""
        return not self.pools

    async def step(self, fleet: Fleet, pool: Pool, access: BrokerAccess, current: int,
                   target: int, report: Report) -> Outcome:
        """The size the pool's Deployment may take now, on the way to ``target``.

        An API error holds a shrinking pool (raised: the pool's fault) but not a growing
        one: growing loses no task, so it never waits on the drains (the step is taken
        again next cycle)."""
        try:
            return await self._tracked(fleet, pool, access, current, target, report)
        except KubeError as err:
            if target <= current:
                raise
            log.warning("pool %s of %s/%s: %s", pool.name, fleet.namespace, fleet.name, err)
            found = self.pools.get((fleet.uid, pool.name))
            return Outcome(target, f"; drains not reconciled: {err}",
                           tuple(sorted(found.drains)) if found else (), settled=False)

    async def _tracked(self, fleet: Fleet, pool: Pool, access: BrokerAccess, current: int,
                       target: int, report: Report) -> Outcome:
        key = (fleet.uid, pool.name)
        found = self.pools.get(key)
        where = (fleet.namespace, fleet.name, pool.name)
        if found is None and key not in self.adopted:
            await self._scan(fleet.namespace)
            # A pool without a labelled record is listed the first time it is resized,
            # for a mark from before records carried the label.
            if where not in self.recorded and target == current:
                self.adopted.add(key)
                return Outcome(target)
        elif found is None and target >= current:
            return Outcome(target)  # the usual case: no pod listed, no worker asked
        self.recorded.discard(where)
        options = transport_options(celery_settings(fleet))
        if found is None:
            found = self.pools[key] = PoolDrains(
                fleet.namespace, pool.name, selector_labels(fleet, "worker", pool.name),
                pool.queues, access, options, self.control_for(access, options))
        elif (found.access, found.options) != (access, options):
            # A rotated Secret (or new transport options): the old ones may no longer work.
            found.access, found.options = access, options
            found.control = self.control_for(access, options)
        found.queues = pool.queues
        self.adopted.add(key)
        try:
            outcome = await self._step(found, pool, current, target, report)
        except ControlError as err:
            log.warning("pool %s of %s/%s: %s", pool.name, fleet.namespace, fleet.name, err)
            outcome = Outcome(max(target, current), f"; held: {err}",
                              tuple(sorted(found.drains)), settled=not found.records)
        if not found.records:
            self.pools.pop(key, None)
        return outcome

    async def _scan(self, namespace: str) -> None:
        """Note the pools of ``namespace`` whose pods carry records (once)."""
        if namespace in self.scanned:
            return
        async with self.scanning[namespace]:
            if namespace in self.scanned:   # looked at while this step waited
                return
            pods = await self.kube.list_pods(namespace, {
                LABEL_NAME: "metamapper", LABEL_COMPONENT: "worker", DRAINING: RECORDED})
            self.recorded |= {(namespace, pod.labels.get(LABEL_INSTANCE, ""),
                               pod.labels.get(LABEL_POOL, ""))
                              for pod in pods.values() if not pod.ended}
            self.scanned.add(namespace)
        # Steps that waited hold the lock already; later ones find the namespace scanned.
        self.scanning.pop(namespace, None)

    async def _step(self, found: PoolDrains, pool: Pool, current: int, target: int,
                    report: Report) -> Outcome:
        now = self.clock()
        if target >= current and found.resting(now):
            return self._outcome(found, target, unconfirmed=found.resuming)
        timeout = drain_timeout(pool.termination_grace_period_seconds)
        pods = {name: pod for name, pod in (
            await self.kube.list_pods(found.namespace, found.selector)).items()
            if not pod.ended}
        found.sync(pods, now, self.wall(), timeout)
        if len(pods) <= current:
            # The pool is down to its replicas and a drained pod is still there: the
            # ReplicaSet removed another. It is a drain again (so resumed if not needed).
            for name in sorted(found.removing):
                found.drains[name] = Draining(name, now, now + timeout)
            found.removing.clear()

        serving = current - len(found.drains)
        if target > serving and found.drains:   # wanted again (or strays): no new pods
            found.give_back(sorted(found.drains)[:target - serving])
        unconfirmed = await self._resume(found, pods, found.resuming, report)
        if target >= current:
            return self._outcome(found, target, unconfirmed=unconfirmed)

        # A Pending pod's worker has not started: it holds nothing, nobody need ask it.
        empty = {name: Load() for name, pod in pods.items() if pod.phase == "Pending"}
        # A worker whose resume is not confirmed may not consume yet: it does not serve.
        serving = current - len(found.drains) - len(unconfirmed)
        if target < serving:
            # Not a worker whose queues are being given back: a new record would restart
            # its resume's time, and one that never answers would never be given up.
            candidates = [p for p in pods if p not in found.drains
                          and p not in found.removing and p not in found.resumes]
            asked = [p for p in candidates if p not in empty]
            loads = {**found.by_pod(await found.control.loads(found.hosts(asked))), **empty}
            chosen = pick([pods[p] for p in candidates], loads, serving - target)
            record = DrainRecord(self.wall(), pool.queues)
            for name in chosen:
                # Recorded before anything is asked of the worker; known here before the
                # write, so that a write cut off half-way is looked for next step.
                found.note(name, record, Draining(name, now, now + timeout))
                await self.kube.annotate_pod(found.namespace, name,
                                             {DRAINING: record.encode()},
                                             {DRAINING: RECORDED})
        await self._stop(found, empty)

        asked = [p for p in found.drains if p not in empty]
        loads = {**found.by_pod(await found.control.loads(found.hosts(asked))), **empty}
        # A worker not known to have stopped is not drained, however idle it looks now.
        stopped = {name: load for name, load in loads.items()
                   if name not in found.unstopped or name in empty}
        result = review(list(found.drains.values()), stopped, now)
        timed_out = None
        if result.timed_out:
            names = [d.pod for d in result.timed_out]
            held = sum(loads[n].total for n in names if n in loads)
            silent = [n for n in names if n not in loads]
            timed_out = (f"drain of {', '.join(names)} timed out after {timeout:g} s "
                         f"holding {held} tasks"
                         + (f" ({', '.join(silent)} not answering)" if silent else "")
                         + "; consuming again")
            found.give_back(names)
            late = await self._resume(found, pods, names, report)
            if late:
                timed_out += f" (not confirmed by {', '.join(late)})"
            unconfirmed += late
            await report("Warning", "DrainTimedOut", f"pool {pool.name}: {timed_out}")
        if not result.drained:
            return self._outcome(found, current, f"; draining {len(found.drains)} pods",
                                 timed_out, unconfirmed)
        why = exact_removal(list(pods.values()), result.drained, current)
        if why:
            return self._outcome(found, current, f"; drained pods wait: {why}", timed_out,
                                 unconfirmed)
        # The ReplicaSet controller ranks pods from its own cache of them: lowering the
        # replicas in the cycle that sets the cost could let it remove a pod it does not
        # yet see as the cheapest. So the pool shrinks once the cost was there at the
        # start of a cycle (one polling interval after it was set).
        unseen = [name for name in result.drained
                  if pods[name].annotations.get(DELETION_COST) != str(DRAINED_COST)]
        for name in unseen:
            await self.kube.annotate_pod(found.namespace, name,
                                         {DELETION_COST: str(DRAINED_COST)})
        if unseen:
            return self._outcome(found, current,
                                 f"; drained {', '.join(unseen)}: removed next cycle",
                                 timed_out, unconfirmed)
        for name in result.drained:
            del found.drains[name]
            found.removing.add(name)
        return self._outcome(found, current - len(result.drained),
                             f"; removing drained {', '.join(result.drained)}", timed_out,
                             unconfirmed)

    @staticmethod
    def _outcome(found: PoolDrains, replicas: int, note: str = "",
                 timed_out: str | None = None, unconfirmed: Sequence[str] = ()) -> Outcome:
        if unconfirmed:
            note += f"; {', '.join(unconfirmed)} not yet consuming again"
        return Outcome(replicas, note, tuple(sorted(found.drains)), timed_out,
                       settled=not found.records)

    async def _stop(self, found: PoolDrains, empty: Collection[str]) -> None:
        """Tell every drain's worker not known to have stopped (just picked, left so by a
        step that failed, or a predecessor's) to stop consuming its record's queues."""
        names = [n for n in found.drains if n in found.unstopped and n not in empty]
        for queues, group in found.by_queues(names).items():
            confirmed = await found.control.stop_consuming(found.hosts(group), queues)
            found.unstopped -= {n for n in group if hostname(found.pool, n) in confirmed}

    async def _resume(self, found: PoolDrains, pods: Mapping[str, WorkerPod],
                      names: Sequence[str], report: Report) -> list[str]:
        """Give the workers of ``names`` (records no longer drained) their records' queues
        back; remove the record of each that confirmed. Those that did not keep theirs,
        and are asked again once due (the wait doubling); returned. A Pending pod's worker
        has not started: it will consume every queue when it does, so its record goes at
        once. A worker whose pod is not Running and ready cannot answer: it is not asked.
        Past :data:`RESUME_LIMIT` unconfirmed, the record is given up (one Warning)."""
        now = self.clock()
        for name in names:
            found.resumes.setdefault(name, Resuming(now, now))
        confirmed = [n for n in names if pods[n].phase == "Pending"]
        given_up = {n: "not answering" if pods[n].phase == "Running" and pods[n].ready
                    else f"pod {pods[n].phase}, ready {pods[n].ready}"
                    for n in names if n not in confirmed
                    and now - found.resumes[n].since >= RESUME_LIMIT}
        due = [n for n in names if n not in confirmed and n not in given_up
               and now >= found.resumes[n].due]
        asked = [n for n in due if pods[n].phase == "Running" and pods[n].ready]
        for queues, group in found.by_queues(asked).items():
            replied = await found.control.resume_consuming(found.hosts(group), queues)
            confirmed += [n for n in group if hostname(found.pool, n) in replied]
        for name in sorted([*confirmed, *given_up]):
            await self.kube.annotate_pod(found.namespace, name,
                                         {DRAINING: None, DELETION_COST: None},
                                         {DRAINING: None})
            found.forget(name)
        for name in set(due) - set(confirmed):
            found.resumes[name] = found.resumes[name].later(now)
        if given_up:
            await report("Warning", "DrainAbandoned", (
                f"pool {found.pool}: gave up giving "
                + ", ".join(f"{n} ({why})" for n, why in sorted(given_up.items()))
                + f" its queues back, unconfirmed after {RESUME_LIMIT:g} s; record "
                "removed (a worker that starts again consumes every queue)"))
        return sorted(set(names) - set(confirmed) - set(given_up))

    async def abandon(self, keep: set[tuple[str, str]],
                      known: Collection[Known] | None = None) -> None:
        """Give the workers of pools no longer scaled (not in ``keep``: autoscaling off,
        object gone) their queues back; those that do not confirm are asked again once
        due. Given the Metamappers the operator knows of, ``known``, also the records an
        earlier operator left on pools not scaled now (their namespaces are looked in
        once): resumed with the fleet's access, removed when their pool left the spec, and
        left for a later cycle while the fleet is not known, invalid or without access."""
        if known is not None:
            await self._adopt_unscaled(keep, known)
        for key in set(self.pools) - keep:
            found = self.pools[key]
            try:
                if not found.resting(self.clock()):
                    pods = {name: pod for name, pod in (
                        await self.kube.list_pods(found.namespace, found.selector)).items()
                        if not pod.ended}
                    found.sync(pods, self.clock(), self.wall(), 0.0)
                    found.give_back(list(found.records))
                    await self._resume(found, pods, found.resuming, _logged)
            except (ControlError, KubeError) as err:
                log.warning("pool %s: %s", found.pool, err)
            if not found.records:
                self.pools.pop(key, None)
        self.adopted &= keep

    async def _adopt_unscaled(self, keep: set[tuple[str, str]],
                              known: Collection[Known]) -> None:
        """Make the records found on pools not scaled now :meth:`abandon`'s to undo."""
        fleets = {(k.namespace, k.name): k for k in known}
        for namespace in sorted({k.namespace for k in known} - self.scanned):
            try:
                await self._scan(namespace)
            except KubeError as err:
                log.warning("looking for drain records in %s: %s", namespace, err)
        for where in sorted(self.recorded):
            namespace, name, pool_name = where
            k = fleets.get((namespace, name))
            fleet = k.fleet if k is not None else None
            pool = next((p for p in fleet.pools if p.name == pool_name),
                        None) if fleet is not None else None
            if fleet is not None and (fleet.uid, pool_name) in keep:
                continue   # its step takes the records
            if fleet is None or k is None or k.access is None:
                # Not known yet (an operator just started reconciles objects one by one),
                # invalid or without access for now: its workers cannot be reached, and
                # a record removed now would leave a stopped worker nobody remembers.
                # Looked at again each cycle, without a request; a fleet that is gone
                # takes its pods, and so its records, with it.
                continue
            try:
                if pool is None:   # the pool left the spec: its Deployment goes, and its pods
                    await self._drop_records(namespace, name, pool_name)
                elif (fleet.uid, pool.name) not in self.pools:
                    options = transport_options(celery_settings(fleet))
                    self.pools[(fleet.uid, pool.name)] = PoolDrains(
                        namespace, pool.name, selector_labels(fleet, "worker", pool.name),
                        pool.queues, k.access, options, self.control_for(k.access, options))
            except KubeError as err:
                log.warning("pool %s of %s/%s: %s", pool_name, namespace, name, err)
                continue
            self.recorded.discard(where)

    async def _drop_records(self, namespace: str, name: str, pool: str) -> None:
        """Remove the records of a pool that left its fleet's spec: its Deployment and
        its workers go."""
        pods = await self.kube.list_pods(namespace, {
            LABEL_NAME: "metamapper", LABEL_COMPONENT: "worker", LABEL_INSTANCE: name,
            LABEL_POOL: pool, DRAINING: RECORDED})
        for pod in sorted(pods):
            await self.kube.annotate_pod(namespace, pod, {DRAINING: None, DELETION_COST: None},
                                         {DRAINING: None})
        if pods:
            log.warning("pool %s of %s/%s is no longer in its spec; drain records removed "
                        "from %s", pool, namespace, name, ", ".join(sorted(pods)))


async def _logged(kind: str, reason: str, message: str) -> None:
    """The report of a pool no longer scaled: its object may be gone, so a log line."""
    log.warning("%s: %s", reason, message)
