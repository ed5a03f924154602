"""The per-task ledger of ``bench/chaos.py`` and its invariant.

Every task the soak sends has a unique id; its runs are read back from the workload's
records (``devenv.workload``: a ``started`` and a ``done`` line per run, each with the
time, the pod and the worker process). A run is a ``started`` line and the first later
``done`` line of the same pod and process; a ``started`` line without one was cut off.

The invariant, per task:

- **lost**: no run finished;
- **ran twice**: more than one run finished;
- **interrupted**: some run was cut off;
- every run after the first is **explained** when the run before it overlapped (from its
  start to ``ACK_SLACK`` after its end, the moment its acknowledgement could still be cut
  off) a fault that interrupts (``_chaos_faults.Kind.interrupts``) and hit that run: its
  pod, or its fleet's broker, or the whole node. Anything else is unexplained: a task
  runs again only because one of its runs was killed or cut off. A run cut off is
  explained the same way (the upgrade test asks that of every one).

All times are wall-clock seconds (the pods' ``time.time()``, the same clock here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from _chaos_faults import KINDS, Scope
from devenv.workload import Record

ACK_SLACK = 2.0   # seconds after a run's end during which its acknowledgement may be lost


@dataclass(frozen=True)
class Run:
    started: float
    pod: str
    pid: int
    finished: float | None   # None: cut off


@dataclass(frozen=True)
class Fault:
    """A fault as it happened: which, on which fleet and pods (empty: all of them), and
    when it began, ended and the fleet was whole again (None: not within the limit)."""

    index: int
    kind: str
    broker: str
    pods: frozenset[str]
    began: float
    ended: float
    recovered: float | None

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.began

    def hit(self, run: Run, broker: str) -> bool:
        """Whether this fault could have cut ``run`` (of a task on ``broker``) off."""
        kind = KINDS[self.kind]
        if not kind.interrupts:
            return False
        end = (run.finished if run.finished is not None else float("inf")) + ACK_SLACK
        if self.began > end or self.ended < run.started:
            return False
        if kind.scope is Scope.NODE:
            return True
        if self.broker != broker:
            return False
        return kind.scope is Scope.BROKER or not self.pods or run.pod in self.pods


@dataclass(frozen=True)
class Task:
    task_id: str
    broker: str
    sent: float
    runs: tuple[Run, ...]

    @property
    def finished(self) -> int:
        return sum(1 for run in self.runs if run.finished is not None)

    @property
    def lost(self) -> bool:
        return self.finished == 0

    @property
    def ran_twice(self) -> bool:
        return self.finished > 1

    @property
    def interrupted(self) -> bool:
        return any(run.finished is None for run in self.runs)

    def explanations(self, faults: Sequence[Fault]) -> list[Fault | None]:
        """For each run after the first, the fault that cut the run before it off (None:
        unexplained)."""
        return [next((f for f in faults if f.hit(before, self.broker)), None)
                for before in self.runs[:-1]]

    def unexplained(self, faults: Sequence[Fault]) -> bool:
        return None in self.explanations(faults)

    def cut_off_unexplained(self, faults: Sequence[Fault]) -> bool:
        """Whether a run of it was cut off that no fault could have cut off."""
        return any(run.finished is None and not any(f.hit(run, self.broker) for f in faults)
                   for run in self.runs)

    def blamed(self, faults: Sequence[Fault]) -> Fault | None:
        """The fault a finding of this task is counted under: the one that explains its
        first repeat, else the last fault that began before its last trace (its last
        run's start, or its sending)."""
        explained = [f for f in self.explanations(faults) if f is not None]
        if explained:
            return explained[0]
        last = max([self.sent, *(run.started for run in self.runs)])
        before = [f for f in faults if f.began <= last]
        return max(before, key=lambda f: f.began) if before else None


def pair_runs(started: Iterable[Record], done: Iterable[Record]) -> tuple[Run, ...]:
    """A task's runs from its ``started`` and ``done`` records (any order)."""
    finishes = sorted(done, key=lambda r: r.at)
    runs = []
    for start in sorted(started, key=lambda r: r.at):
        end = next((d for d in finishes if d.pod == start.pod and d.pid == start.pid
                    and d.at >= start.at), None)
        if end is not None:
            finishes.remove(end)
        runs.append(Run(start.at, start.pod, start.pid, None if end is None else end.at))
    return tuple(runs)
