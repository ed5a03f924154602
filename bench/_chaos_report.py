"""When the fleet is whole again after a fault, and the table ``bench/chaos.py`` prints.

The fleet is whole when every pool of every fleet is within its bounds with all its pods
ready, no pod is draining, and every task sent before the fault began has finished (the
backlog the fault found is drained). A fault's recovery time runs from the moment it
began to the first snapshot, after it ended, in which the fleet is whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from _chaos_faults import CATALOGUE
from _chaos_ledger import Fault, Task
from _common import percentile


@dataclass(frozen=True)
class PoolState:
    """A pool as its Metamapper's status and spec say."""

    fleet: str
    name: str
    min_replicas: int
    max_replicas: int
    replicas: int
    ready: int
    draining: tuple[str, ...]


@dataclass(frozen=True)
class Snapshot:
    at: float
    pools: tuple[PoolState, ...]
    unfinished_before: int   # tasks sent before the fault began, not finished yet


def shortfalls(snapshot: Snapshot) -> list[str]:
    """What keeps the fleet from being whole (nothing: it is whole)."""
    found = []
    for pool in snapshot.pools:
        where = f"{pool.fleet}/{pool.name}"
        if not pool.min_replicas <= pool.replicas <= pool.max_replicas:
            found.append(f"{where}: {pool.replicas} replicas outside "
                         f"[{pool.min_replicas}, {pool.max_replicas}]")
        if pool.ready != pool.replicas:
            found.append(f"{where}: {pool.ready}/{pool.replicas} ready")
        if pool.draining:
            found.append(f"{where}: draining {', '.join(pool.draining)}")
    if snapshot.unfinished_before:
        found.append(f"{snapshot.unfinished_before} earlier tasks unfinished")
    return found


def recovered_at(ended: float, snapshots: Sequence[Snapshot]) -> float | None:
    """The first moment at or after ``ended`` when the fleet was whole."""
    return next((s.at for s in snapshots if s.at >= ended and not shortfalls(s)), None)


@dataclass(frozen=True)
class Row:
    kind: str
    faults: int
    not_recovered: int
    lost: int
    ran_twice: int
    unexplained: int
    interrupted: int
    recovery: tuple[float, ...]

    def cells(self) -> list[str]:
        figures = ([f"{percentile(self.recovery, q):.1f}" for q in (50, 95)]
                   + [f"{max(self.recovery):.1f}"]) if self.recovery else ["-"] * 3
        return [self.kind, str(self.faults), str(self.not_recovered), str(self.lost),
                f"{self.ran_twice} ({self.unexplained} unexplained)", str(self.interrupted),
                *figures]


HEADERS = ("fault", "faults", "not recovered", "tasks lost", "ran twice", "interrupted",
           "recovery p50 s", "p95 s", "max s")
NO_FAULT = "(before any fault)"


def rows(faults: Sequence[Fault], tasks: Sequence[Task]) -> list[Row]:
    """One row per fault kind injected (catalogue order), each task's findings counted
    under the kind of the fault it is blamed on (``Task.blamed``); findings before the
    first fault get a row of their own."""
    findings: dict[str, list[Task]] = {}
    for task in tasks:
        if task.lost or task.ran_twice or task.interrupted or task.unexplained(faults):
            blamed = task.blamed(faults)
            findings.setdefault(blamed.kind if blamed else NO_FAULT, []).append(task)
    kinds = [k.name for k in CATALOGUE if any(f.kind == k.name for f in faults)]
    if NO_FAULT in findings:
        kinds.append(NO_FAULT)
    table = []
    for kind in kinds:
        hit = [f for f in faults if f.kind == kind]
        found = findings.get(kind, [])
        times = tuple(s for f in hit if (s := f.recovery_seconds) is not None)
        table.append(Row(
            kind, len(hit), sum(1 for f in hit if f.recovered is None),
            sum(t.lost for t in found), sum(t.ran_twice for t in found),
            sum(t.unexplained(faults) for t in found), sum(t.interrupted for t in found),
            times))
    return table


@dataclass(frozen=True)
class Verdict:
    """What the soak asserts: nothing lost, every repeat explained, every fault recovered."""

    tasks: int
    lost: tuple[str, ...]
    unexplained: tuple[str, ...]
    not_recovered: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.unexplained or self.not_recovered)


def verdict(faults: Sequence[Fault], tasks: Sequence[Task]) -> Verdict:
    return Verdict(len(tasks), tuple(t.task_id for t in tasks if t.lost),
                   tuple(t.task_id for t in tasks if t.unexplained(faults)),
                   tuple(f.index for f in faults if f.recovered is None))
