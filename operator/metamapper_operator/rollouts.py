"""Why a rollout does not finish, from its pods: a failed rollout shows as Degraded with
the pod's own reason (ImagePullBackOff, CrashLoopBackOff, Unschedulable, ...), not as
"waiting for pods" for ever.

The Deployment watch says which Deployments have not settled
(:attr:`~metamapper_operator.children.Children.unsettled`); pods are not watched (at
10,000 objects that would cost more than everything else). So only a Deployment unsettled
for :data:`STUCK_AFTER` seconds has its pods listed, at most :data:`LOOKS_PER_PASS` per
pass, each again after a doubling pause (up to :data:`LONGEST_PAUSE`) while it stays
unsettled. A fleet at rest costs a look at an empty set.

What a look finds is the object's fault for the step ``rollout of <Deployment>``
(:func:`containment.settle`: Ready False and Degraded with the pod's reason, one Warning
event), cleared once the Deployment settles or its pods no longer tell of a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from metamapper_operator.builders import (
    flower_name,
    pool_deployment_name,
    scheduler_deployment_name,
    selector_labels,
)
from metamapper_operator.children import Children
from metamapper_operator.containment import Boundary
from metamapper_operator.kube import KubeError
from metamapper_operator.model import Fleet
from metamapper_operator.runtime import Runtime
from metamapper_operator.state import Key
from metamapper_operator.status import Fault, pod_stall

STUCK_AFTER = 30.0     # seconds a Deployment may be unsettled before its pods are read
LOOK_EVERY = 10.0      # seconds between passes
LOOKS_PER_PASS = 8     # pod listings per pass, at most
LONGEST_PAUSE = 300.0  # between two looks at the same Deployment

Entry = tuple[Key, str]   # a Deployment: its owner and its name


def step_of(deployment: str) -> str:
    return f"rollout of {deployment}"


def pod_selector(fleet: Fleet, deployment: str) -> dict[str, str] | None:
    """The labels of the pods of the fleet's Deployment ``deployment`` (None: not one of
    the fleet's)."""
    for pool in fleet.pools:
        if pool_deployment_name(fleet, pool) == deployment:
            return selector_labels(fleet, "worker", pool.name)
    if deployment == scheduler_deployment_name(fleet):
        return selector_labels(fleet, "scheduler")
    if deployment == flower_name(fleet):
        return selector_labels(fleet, "flower")
    return None


@dataclass(slots=True)
class Due:
    """When a Deployment's pods are read next, and the pause after that."""

    at: float
    pause: float


@dataclass
class Rollouts:
    """Reads the pods of Deployments that do not settle and reports why (see above)."""

    runtime: Runtime
    children: Children
    clock: Callable[[], float] = time.monotonic
    due: dict[Entry, Due] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(LOOK_EVERY)
            await self.look()

    async def look(self) -> None:
        """One pass: forget Deployments that settled (and their faults), read the pods of
        those due."""
        now = self.clock()
        unsettled = self.children.unsettled
        for entry in [entry for entry in self.due if entry not in unsettled]:
            del self.due[entry]
            await self._report(entry, None)
        for entry in unsettled:
            if entry not in self.due:
                self.due[entry] = Due(now + STUCK_AFTER, LOOK_EVERY)
        ready = sorted((due.at, entry) for entry, due in self.due.items() if due.at <= now)
        for _, entry in ready[:LOOKS_PER_PASS]:
            due = self.due[entry]
            due.at, due.pause = now + due.pause, min(due.pause * 2, LONGEST_PAUSE)
            await self._look_at(entry)

    async def _look_at(self, entry: Entry) -> None:
        key, name = entry
        state = self.runtime.fleets.get(key)
        labels = pod_selector(state.fleet, name) if state and state.fleet else None
        if labels is None:
            return
        # Not being able to look is no fault of the object's: logged, tried next time.
        with Boundary(f"reading the pods of {key.namespace}/{name}", "PodsUnread",
                      expected=(KubeError,)) as boundary:
            pods = await self.runtime.kube.pod_bodies(key.namespace, labels)
        if boundary.fault is None:
            stall = pod_stall(pods)
            await self._report(entry, None if stall is None else Fault(
                step=step_of(name), reason=stall.reason, message=stall.message))

    async def _report(self, entry: Entry, fault: Fault | None) -> None:
        """Record how the rollout stands; publish and announce what changed."""
        key, name = entry
        state, lock = self.runtime.fleets.get(key), self.runtime.locks.get(key)
        if state is None or lock is None or state.faults.get(step_of(name)) == fault:
            return
        async with lock:
            await self.runtime.settle(key, step_of(name), fault)
            with Boundary(f"status of {key.namespace}/{key.name}", "StatusFailed",
                          expected=(KubeError,)):
                await self.runtime.publish(key, self.children.deployments(key))
