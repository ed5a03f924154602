"""Shrinking a pool: drain before delete, wired to the Kube edge and the workers' control.

Each autoscaling cycle, for a pool that must shrink (or has workers draining), the
:class:`Shrinker` picks workers to retire and stops their consumers, looks at what the
draining ones still hold, gives up on drains past their timeout (the worker consumes
again; a Warning event ``DrainTimedOut`` and the pool's status say so), and returns the
size the Deployment may take now: lower only by the drained pods, which get the lowest
pod-deletion cost a cycle before so the ReplicaSet controller removes exactly them
(``autoscale/drainplan.py`` says when that holds; otherwise the pool waits a cycle).

A pod being drained carries the annotation ``metamapper.io/draining``, so an operator
that restarts (or takes over) finds the drains it did not start and carries them on.

Pools on SQS are not drained: there is no broadcast to reach a worker by. They shrink the
plain way (the ReplicaSet controller picks the pods; SIGTERM; Celery's warm shutdown
finishes what it runs within the grace period; a task cut off at the end of it is
delivered again by SQS once its visibility timeout expires, thanks to late acks).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from metamapper_operator.autoscale.drain import ControlError, WorkerControl
from metamapper_operator.autoscale.drainplan import (
    DELETION_COST,
    DRAINED_COST,
    Draining,
    Load,
    drain_timeout,
    exact_removal,
    hostname,
    pick,
    review,
)
from metamapper_operator.builders import celery_settings, selector_labels
from metamapper_operator.kube import Kube, KubeError
from metamapper_operator.model import Fleet, Pool
from metamapper_operator.references import BrokerAccess

DRAINING = "metamapper.io/draining"
log = logging.getLogger(__name__)

Report = Callable[[str, str, str], Awaitable[None]]   # (event type, reason, message)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a shrinking step allows now and what status shows of it."""

    replicas: int
    note: str = ""                      # appended to the scale reason
    draining: tuple[str, ...] = ()
    timed_out: str | None = None        # the latest drain given up, if one was this step


@dataclass(slots=True)
class PoolDrains:
    """The drains of one pool, with what it takes to give the workers their queues back."""

    namespace: str
    pool: str
    queues: tuple[str, ...]
    control: WorkerControl
    drains: dict[str, Draining] = field(default_factory=dict)

    def hosts(self, pods: Sequence[str]) -> list[str]:
        return [hostname(self.pool, pod) for pod in pods]

    def by_pod(self, found: Mapping[str, Load]) -> dict[str, Load]:
        prefix = f"{self.pool}@"
        return {host.removeprefix(prefix): load for host, load in found.items()
                if host.startswith(prefix)}


@dataclass
class Shrinker:
    kube: Kube
    clock: Callable[[], float]
    # How to reach a broker's workers (given in the wiring tests).
    control_for: Callable[[BrokerAccess, Mapping[str, object]], WorkerControl] = WorkerControl
    pools: dict[tuple[str, str], PoolDrains] = field(default_factory=dict)  # (uid, pool)
    adopted: set[tuple[str, str]] = field(default_factory=set)

    async def step(self, fleet: Fleet, pool: Pool, access: BrokerAccess, current: int,
                   target: int, report: Report) -> Outcome:
        """The size the pool's Deployment may take now, on the way to ``target``."""
        key = (fleet.uid, pool.name)
        found = self.pools.get(key)
        # Drains an earlier operator left are looked for the first time the pool changes.
        if found is None and (target == current or (target > current and key in self.adopted)):
            return Outcome(target)  # the usual case: no pod listed, no worker asked
        self.adopted.add(key)
        found = self.pools[key] = found or self._pool(fleet, pool, access)
        try:
            outcome = await self._step(found, fleet, pool, current, target, report)
        except ControlError as err:
            log.warning("pool %s of %s/%s: %s", pool.name, fleet.namespace, fleet.name, err)
            outcome = Outcome(max(target, current), f"; held: {err}",
                              tuple(sorted(found.drains)))
        if not found.drains:
            self.pools.pop(key, None)
        return outcome

    def _pool(self, fleet: Fleet, pool: Pool, access: BrokerAccess) -> PoolDrains:
        options = celery_settings(fleet).get("broker_transport_options") or {}
        return PoolDrains(fleet.namespace, pool.name, pool.queues,
                          self.control_for(access, options))

    async def _step(self, found: PoolDrains, fleet: Fleet, pool: Pool, current: int,
                    target: int, report: Report) -> Outcome:
        now = self.clock()
        timeout = drain_timeout(pool.termination_grace_period_seconds)
        pods = await self.kube.list_pods(fleet.namespace,
                                         selector_labels(fleet, "worker", pool.name))
        for name in [p for p in found.drains if p not in pods]:   # gone meanwhile
            del found.drains[name]
        for name, pod in pods.items():   # marked by an operator before this one
            if pod.annotations.get(DRAINING) and name not in found.drains:
                found.drains[name] = Draining(name, now, now + timeout)

        serving = current - len(found.drains)
        if target > serving and found.drains:   # wanted again: cheaper than new pods
            back = sorted(found.drains)[:target - serving]
            await self._resume(found, back)
        if target >= current:
            return Outcome(target, draining=tuple(sorted(found.drains)))

        # A Pending pod's worker has not started: it holds nothing, nobody need ask it.
        empty = {name: Load() for name, pod in pods.items() if pod.phase == "Pending"}
        serving = current - len(found.drains)
        if target < serving:
            candidates = [p for p in pods if p not in found.drains]
            asked = [p for p in candidates if p not in empty]
            loads = {**found.by_pod(await found.control.loads(found.hosts(asked))), **empty}
            chosen = pick([pods[p] for p in candidates], loads, serving - target)
            # Recorded whether or not each confirmed: a lost reply may hide a worker that
            # stopped; one that never stopped times out and is resumed like any other.
            await found.control.stop_consuming(
                found.hosts([p for p in chosen if p not in empty]), pool.queues)
            for name in chosen:
                await self.kube.annotate_pod(fleet.namespace, name, {DRAINING: "true"})
                found.drains[name] = Draining(name, now, now + timeout)

        asked = [p for p in found.drains if p not in empty]
        loads = {**found.by_pod(await found.control.loads(found.hosts(asked))), **empty}
        result = review(list(found.drains.values()), loads, now)
        timed_out = None
        if result.timed_out:
            names = [d.pod for d in result.timed_out]
            held = sum(loads[n].total for n in names if n in loads)
            silent = [n for n in names if n not in loads]
            timed_out = (f"drain of {', '.join(names)} timed out after {timeout:g} s "
                         f"holding {held} tasks"
                         + (f" ({', '.join(silent)} not answering)" if silent else "")
                         + "; consuming again")
            unconfirmed = sorted(set(names) - await self._resume(found, names))
            if unconfirmed:
                timed_out += f" (not confirmed by {', '.join(unconfirmed)})"
            await report("Warning", "DrainTimedOut", f"pool {pool.name}: {timed_out}")
        if not result.drained:
            return Outcome(current, f"; draining {len(found.drains)} pods",
                           tuple(sorted(found.drains)), timed_out)
        why = exact_removal(list(pods.values()), result.drained, current)
        if why:
            return Outcome(current, f"; drained pods wait: {why}",
                           tuple(sorted(found.drains)), timed_out)
        # The ReplicaSet controller ranks pods from its own cache of them: lowering the
        # replicas in the cycle that sets the cost could let it remove a pod it does not
        # yet see as the cheapest. So the pool shrinks once the cost was there at the
        # start of a cycle (one polling interval after it was set).
        unseen = [name for name in result.drained
                  if pods[name].annotations.get(DELETION_COST) != str(DRAINED_COST)]
        for name in unseen:
            await self.kube.annotate_pod(fleet.namespace, name,
                                         {DELETION_COST: str(DRAINED_COST)})
        if unseen:
            return Outcome(current, f"; drained {', '.join(unseen)}: removed next cycle",
                           tuple(sorted(found.drains)), timed_out)
        for name in result.drained:
            del found.drains[name]
        return Outcome(current - len(result.drained),
                       f"; removing drained {', '.join(result.drained)}",
                       tuple(sorted(found.drains)), timed_out)

    async def _resume(self, found: PoolDrains, pods: Sequence[str]) -> set[str]:
        """Give workers their queues back and stop tracking their drains; the pods whose
        workers confirmed. One that did not (gone silent) is no longer waited for: should
        it come back without consuming, it reports itself idle and is the first picked
        for the next scale-down."""
        confirmed = await found.control.resume_consuming(found.hosts(pods), found.queues)
        for name in pods:
            await self.kube.annotate_pod(found.namespace, name,
                                         {DRAINING: None, DELETION_COST: None})
            found.drains.pop(name, None)
        return {name for name in pods if hostname(found.pool, name) in confirmed}

    async def abandon(self, keep: set[tuple[str, str]]) -> None:
        """Resume the drains of pools no longer scaled (autoscaling off, object gone)."""
        for key in set(self.pools) - keep:
            found = self.pools[key]
            try:
                await self._resume(found, sorted(found.drains))
            except (ControlError, KubeError) as err:
                # Their annotation stays: the pool's next scaling finds them again.
                log.warning("pool %s: %s", found.pool, err)
            self.pools.pop(key, None)
        self.adopted &= keep
