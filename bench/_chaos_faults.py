"""The fault catalogue of ``bench/chaos.py`` and its seeded schedule.

One fault at a time: the schedule is a sequence of planned faults, each injected a
``pause`` after the fleet recovered from the one before (so a fault is never measured on a
fleet still recovering). The kinds come in shuffled rounds, each round every chosen kind
once, and a broker's fault (``Scope.BROKER``) once per broker, so the first round of any
run holds every kind and restarts every broker (what a short soak relies on) and a long
run holds them in even numbers. The fleet a kind of another scope hits is drawn for each
fault. Everything is drawn from one ``random.Random(seed)``: the same seed and options give
the same schedule.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum


class Scope(Enum):
    """What a fault hits: one worker pod, a fleet's broker, the node or control plane, the
    operator, or the cluster DNS."""

    POD = "pod"
    BROKER = "broker"
    NODE = "node"
    OPERATOR = "operator"
    DNS = "dns"


@dataclass(frozen=True)
class Kind:
    """A kind of fault. ``interrupts``: it may cut off a running task, which may then run
    again (a kill, or a worker cut from its broker); a duplicate is explained by such a
    fault only."""

    name: str
    scope: Scope
    interrupts: bool
    what: str


CATALOGUE: tuple[Kind, ...] = (
    Kind("pod-sigkill", Scope.POD, True, "SIGKILL of a worker pod's container"),
    Kind("pod-oom", Scope.POD, True, "a task holding more memory than the pod's limit"),
    Kind("pod-delete", Scope.POD, True, "a worker pod deleted (its grace period applies)"),
    Kind("pod-evict", Scope.POD, True, "a worker pod evicted through the Eviction API"),
    Kind("partition-short", Scope.POD, True,
         "a worker cut off from its broker for less than the visibility timeout"),
    Kind("partition-long", Scope.POD, True,
         "a worker cut off from its broker for longer than the visibility timeout"),
    Kind("broker-restart", Scope.BROKER, True, "the fleet's broker restarted"),
    Kind("kubelet-restart", Scope.NODE, False, "the kubelet restarted"),
    Kind("containerd-restart", Scope.NODE, False, "containerd restarted (shims stay)"),
    Kind("apiserver-restart", Scope.NODE, False, "kube-apiserver restarted"),
    Kind("operator-kill", Scope.OPERATOR, False, "SIGKILL of the operator's process"),
    Kind("operator-pause", Scope.OPERATOR, False,
         "the operator's process stopped (SIGSTOP) for longer than its lease"),
    Kind("helm-upgrade", Scope.OPERATOR, False,
         "helm upgrade of the operator to a new image tag, in the middle of a burst"),
    Kind("dns-outage", Scope.DNS, False, "CoreDNS scaled to zero for a while"),
)
# Not in the catalogue: no soak injects it. What an operator upgrade that changes the pods'
# template does to a pool (its RollingUpdate replaces each pod, within its grace period);
# the upgrade test records one per rolled pool (``_chaos_upgrade``).
ROLLOUT = Kind("pool-rollout", Scope.POD, True,
               "a pool's pods replaced by its RollingUpdate (an operator upgrade)")
KINDS: dict[str, Kind] = {kind.name: kind for kind in (*CATALOGUE, ROLLOUT)}


@dataclass(frozen=True)
class Timing:
    """The settings the holds are drawn against."""

    visibility_timeout: float
    lease_seconds: float
    pause_range: tuple[float, float] = (5.0, 20.0)   # seconds between recovery and the next


@dataclass(frozen=True)
class PlannedFault:
    """One fault of the schedule.

    ``broker``: the fleet it hits (for the fleet-wide kinds, the fleet measured);
    ``pick``: in [0, 1), which of the fleet's pods, sorted by name, is the target (drawn
    here so that the schedule, not the moment, decides); ``hold``: seconds the fault lasts
    (a partition, a pause, a DNS outage; 0 for the instantaneous ones); ``pause``: seconds
    after the previous fault's recovery before this one; ``burst``: send a burst first.
    """

    index: int
    kind: str
    broker: str
    pick: float
    hold: float
    pause: float
    burst: bool

    def target(self, pods: Sequence[str]) -> str:
        """The pod of ``pods`` this fault hits (by ``pick`` over the sorted names)."""
        if not pods:
            raise ValueError("no pod to hit")
        ordered = sorted(pods)
        return ordered[int(self.pick * len(ordered))]


def hold_seconds(kind: str, timing: Timing, rng: random.Random) -> float:
    """How long a fault of ``kind`` lasts: a short partition ends well before the
    visibility timeout, a long one well after it; a pause outlasts the lease."""
    vis = timing.visibility_timeout
    holds = {
        "partition-short": (0.2 * vis, 0.6 * vis),
        "partition-long": (1.3 * vis, 1.8 * vis),
        "operator-pause": (1.5 * timing.lease_seconds, 2.5 * timing.lease_seconds),
        "dns-outage": (10.0, 40.0),
    }
    low, high = holds.get(kind, (0.0, 0.0))
    return round(rng.uniform(low, high), 1) if high else 0.0


def round_length(kinds: Sequence[str], brokers: Sequence[str]) -> int:
    """How many faults one round of the schedule holds: every kind once, and a broker's
    fault once per broker."""
    return sum(len(brokers) if KINDS[kind].scope is Scope.BROKER else 1 for kind in kinds)


def schedule(seed: int, count: int, kinds: Sequence[str], brokers: Sequence[str],
             timing: Timing) -> list[PlannedFault]:
    """``count`` faults from ``kinds`` (in shuffled rounds) on ``brokers``, from ``seed``."""
    unknown = sorted(set(kinds) - {kind.name for kind in CATALOGUE})
    if unknown:
        raise ValueError(f"unknown fault kinds: {', '.join(unknown)}")
    if not kinds or not brokers:
        raise ValueError("at least one fault kind and one broker are needed")
    rng = random.Random(seed)
    planned: list[PlannedFault] = []
    order: list[tuple[str, str | None]] = []
    for index in range(count):
        if not order:
            order = [(kind, broker) for kind in kinds for broker in (
                brokers if KINDS[kind].scope is Scope.BROKER else [None])]
            rng.shuffle(order)
        kind, fleet = order.pop(0)
        planned.append(PlannedFault(
            index=index, kind=kind, broker=fleet or rng.choice(list(brokers)),
            pick=rng.random(),
            hold=hold_seconds(kind, timing, rng),
            pause=round(rng.uniform(*timing.pause_range), 1),
            burst=kind == "helm-upgrade" or rng.random() < 0.3))
    return planned
