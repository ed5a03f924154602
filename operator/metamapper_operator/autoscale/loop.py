"""The autoscaling loop: one for the whole operator, not a timer per object.

Every polling interval it groups the pools of every Metamapper by broker, measures each
broker once (all its queues in one round trip where the broker allows), decides each
pool's size with the pure policy, and patches the scale subresource only of Deployments
whose size must change. When nothing changes it makes no API request at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from metamapper_operator import metrics
from metamapper_operator.autoscale.drain import can_broadcast
from metamapper_operator.autoscale.policy import Bounds, History, decide
from metamapper_operator.autoscale.shrink import Outcome, Shrinker
from metamapper_operator.brokers import Probe, ProbeError, QueueDepth, probe_for
from metamapper_operator.brokers.base import probe_error
from metamapper_operator.builders import pool_deployment_name
from metamapper_operator.kube import KubeError
from metamapper_operator.model import Fleet, Pool
from metamapper_operator.publish import now
from metamapper_operator.references import BrokerAccess
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState, PoolScale

log = logging.getLogger(__name__)

DeploymentsOf = Callable[[Key], Mapping[str, DeploymentState]]
# Intervals without a finished cycle after which the autoscaler counts as stalled.
STALLED_CYCLES = 3


def backlog_of(pool: Pool, depths: Mapping[str, QueueDepth]) -> int:
    """Messages waiting on the pool's queues, plus in flight when the pool counts them."""
    total = 0
    for queue in pool.queues:
        depth = depths.get(queue, QueueDepth(waiting=0, in_flight=0))
        total += depth.waiting
        if pool.autoscaling.count_in_flight and depth.in_flight:
            total += depth.in_flight
    return total


@dataclass(kw_only=True)
class Measurement:
    """One broker's answer: the depths, or the error (redacted) that stopped them."""

    depths: dict[str, QueueDepth] | None
    source: str | None
    error: str | None = None


@dataclass(frozen=True)
class Member:
    """A pool to scale, with the generation of the spec it was read from."""

    key: Key
    fleet: Fleet
    pool: Pool
    generation: int


@dataclass
class Autoscaler:
    runtime: Runtime
    deployments_of: DeploymentsOf
    clock: Callable[[], float] = time.monotonic
    probes: dict[BrokerAccess, Probe] = field(default_factory=dict)
    # By (uid, pool): a re-created object (same name, new uid) starts without history.
    history: dict[tuple[str, str], History] = field(default_factory=dict)
    finished: float | None = None  # when the last cycle ended (clock), None before one
    shrinker: Shrinker | None = None   # made on first use, with the runtime's Kube edge

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

    def _groups(self) -> dict[BrokerAccess, list[Member]]:
        groups: dict[BrokerAccess, list[Member]] = defaultdict(list)
        for key, state in list(self.runtime.fleets.items()):
            fleet, access = state.fleet, state.access
            if fleet is None or access is None or fleet.suspend or state.invalid:
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
                and state.generation == member.generation and not state.fleet.suspend)

    async def _measure(self, access: BrokerAccess, queues: set[str]) -> Measurement:
        """One broker's depths, or its error: whatever goes wrong with one broker (a URL
        its client library refuses, say) is that broker's alone."""
        labels = (access.transport, access.display.rpartition("@")[2])
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
            if not isinstance(err, ProbeError):
                err = probe_error(access, access.display, err)
            return Measurement(depths=None, source=source, error=str(err))
        finally:
            metrics.probe_seconds.labels(*labels).observe(self.clock() - started)
        return Measurement(depths=depths, source=source)

    async def cycle(self) -> None:
        groups = self._groups()
        for stale in set(self.probes) - set(groups):
            await self.probes.pop(stale).close()
        accesses = list(groups)
        measurements = await asyncio.gather(*(
            self._measure(a, {q for member in groups[a] for q in member.pool.queues})
            for a in accesses))
        seen: set[str] = set()
        scaled: set[tuple[str, str]] = set()
        changed: dict[Key, None] = {}  # ordered, so statuses are written in a stable order
        for access, measurement in zip(accesses, measurements, strict=True):
            for member in groups[access]:
                key = member.key
                seen.add(member.fleet.uid)
                scaled.add((member.fleet.uid, member.pool.name))
                lock = self.runtime.locks.get(key)
                if lock is None:  # deleted meanwhile
                    continue
                try:
                    async with lock:
                        if self._current(member) and await self._scale_pool(
                                key, member.fleet, member.pool, access, measurement):
                            changed[key] = None
                except KubeError as err:  # this pool only; the next cycle tries again
                    log.warning("scaling pool %s of %s/%s: %s", member.pool.name, *key, err)
            for key in dict.fromkeys(member.key for member in groups[access]):
                if await self._broker_state(key, measurement.error):
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
                log.warning("status of %s/%s: %s", *key, err)
        # Forget pools of objects that are gone; workers of pools no longer scaled that
        # were draining consume again.
        self.history = {k: v for k, v in self.history.items() if k[0] in seen}
        await self._shrinker().abandon(scaled)

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

    async def _event(self, key: Key, kind: str, reason: str, message: str) -> None:
        state = self.runtime.fleets.get(key)
        uid = state.uid if state else None
        await self.runtime.kube.event({"namespace": key.namespace, "name": key.name, "uid": uid},
                                      kind, reason, message)

    async def _scale_pool(self, key: Key, fleet: Fleet, pool: Pool, access: BrokerAccess,
                          measurement: Measurement) -> bool:
        """Decide the pool's size and apply it; True when what status shows changed."""
        name = pool_deployment_name(fleet, pool)
        dep = self.deployments_of(key).get(name)
        if dep is None:  # not created yet: the reconciler will
            return False
        current = self.runtime.replicas(key, name, dep.replicas)
        depths = measurement.depths
        backlog = None if depths is None else backlog_of(pool, depths)
        stale = None if depths is None else sum(
            depths[queue].stale for queue in pool.queues if queue in depths)
        decision = decide(Bounds.of(pool), current, backlog, self.clock(),
                          self.history.get((fleet.uid, pool.name), History()))
        self.history[(fleet.uid, pool.name)] = decision.history
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
                          stale_in_flight=stale, draining=outcome.draining,
                          drain_timed_out=timed_out)
        if target != current:
            await self._resize(key, pool, name, current, target, reason)
            scale = replace(scale, last_scale_time=now(), last_scale_reason=reason)
        if scale == previous:
            return False
        state.scaling[pool.name] = scale
        labels = (key.namespace, key.name, pool.name)
        if backlog is not None:
            metrics.backlog.labels(*labels).set(backlog)
        metrics.desired_replicas.labels(*labels).set(decision.replicas)
        metrics.current_replicas.labels(*labels).set(current)
        return True

    async def _resize(self, key: Key, pool: Pool, name: str, current: int, target: int,
                      reason: str) -> None:
        await self.runtime.kube.scale(key.namespace, name, target)
        self.runtime.note_scale(key, name, target)
        direction = "up" if target > current else "down"
        metrics.scale_events.labels(key.namespace, key.name, pool.name, direction).inc()
        await self._event(key, "Normal", f"Scaled{direction.capitalize()}",
                          f"pool {pool.name}: {current} -> {target} pods ({reason})")
