"""The traces the autoscaling benchmarks replay: reading them, finding them, and making the
generated ones.

A trace is a CSV file ``bench/<name>-trace.csv`` with the header
``offset_seconds,tasks,task_seconds`` and one row per group of tasks sent at once, in the
order of their offsets; lines starting with ``#`` are comments (how the trace was made).
``bench/bursty-trace.csv`` was written by hand; the others are made by this module, from
the functions in :data:`GENERATED` (seeded where they draw numbers), and a test checks that
the committed files are what it makes. After changing one, write them again::

    python bench/_traces.py
"""

from __future__ import annotations

import csv
import datetime
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from croniter import croniter

from metamapper_beat import SCHEDULE

BENCH = Path(__file__).resolve().parent
SUFFIX = "-trace.csv"
HEADER = "offset_seconds,tasks,task_seconds"
COMMENT = "#"


@dataclass(frozen=True)
class Row:
    """``tasks`` tasks of ``seconds`` each, sent ``offset`` seconds into the trace."""

    offset: float
    tasks: int
    seconds: float


@dataclass(frozen=True)
class Trace:
    name: str
    path: Path
    rows: tuple[Row, ...]

    @property
    def last_offset(self) -> float:
        return self.rows[-1].offset


def name_of(path: Path) -> str:
    """``bench/bursty-trace.csv`` -> ``bursty``."""
    return path.name.removesuffix(SUFFIX).removesuffix(".csv")


def read_trace(path: Path) -> list[Row]:
    with path.open(newline="") as lines:
        trace = [Row(float(r["offset_seconds"]), int(r["tasks"]), float(r["task_seconds"]))
                 for r in csv.DictReader(line for line in lines
                                         if not line.startswith(COMMENT))]
    if not trace or any(a.offset > b.offset for a, b in pairwise(trace)):
        raise SystemExit(f"{path}: expected rows in the order of their offsets")
    return trace


def discover(folder: Path = BENCH) -> list[Path]:
    """Every ``*-trace.csv`` in ``folder``, by name."""
    return sorted(folder.glob(f"*{SUFFIX}"))


def load(paths: Sequence[Path] | None, folder: Path = BENCH) -> list[Trace]:
    """The traces at ``paths`` (every trace in ``folder`` when None or empty), each read
    before anything starts; two with the same name are refused (their pictures would
    overwrite each other)."""
    chosen = list(paths or discover(folder))
    if not chosen:
        raise SystemExit(f"no trace given and none found as {folder}/*{SUFFIX}")
    names = [name_of(path) for path in chosen]
    if twice := sorted({name for name in names if names.count(name) > 1}):
        raise SystemExit(f"traces with the same name: {', '.join(twice)}")
    return [Trace(name, path, tuple(read_trace(path))) for name, path in zip(
        names, chosen, strict=True)]


def render(rows: Iterable[Row], about: str) -> str:
    """A trace file's text: ``about`` as comment lines, the header, the rows."""
    comments = [f"{COMMENT} {line}".rstrip() for line in about.splitlines()]
    body = [f"{row.offset:g},{row.tasks},{row.seconds:g}" for row in rows]
    return "\n".join([*comments, HEADER, *body]) + "\n"


# --- the generated traces ----------------------------------------------------------

BEAT_SEED = 7
RAMP_SEED = 1
BEAT_MINUTE_SECONDS = 3.0   # one hour of beat in 180 s, as long as the bursty trace
BEAT_HOUR = datetime.datetime(2026, 1, 1, 0, 0)   # hour 0: the twice-a-day entries fire too
BEAT_TASK_SECONDS = 1.0     # each entry's own task


@dataclass(frozen=True)
class Fanout:
    """The tasks an entry's task sends on: between ``fewest`` and ``most`` (drawn) of
    ``seconds`` each."""

    fewest: int
    most: int
    seconds: float


#: What the entries that fan out send: the checks due (each minute), the revisioner's runs
#: (at :15 and :45).
FANOUTS = {
    "create-check-executions": Fanout(0, 3, 2.0),
    "queue-revisioner-runs": Fanout(32, 32, 5.0),
}


def beat(seed: int = BEAT_SEED) -> list[Row]:
    """One hour of Metamapper's default beat (:data:`metamapper_beat.SCHEDULE`) as one
    pool consuming every queue sees it, each minute compressed to ``BEAT_MINUTE_SECONDS``:
    at each minute, one task of ``BEAT_TASK_SECONDS`` per entry due, then what the entries
    due send on (:data:`FANOUTS`)."""
    rng = random.Random(seed)
    rows = []
    for minute in range(60):
        # croniter matches either day field, Celery both: the same here, every entry's are *.
        due = [entry.name for entry in SCHEDULE
               if croniter.match(entry.schedule.cron, BEAT_HOUR.replace(minute=minute))]
        at = minute * BEAT_MINUTE_SECONDS
        rows.append(Row(at, len(due), BEAT_TASK_SECONDS))
        for fanout in (FANOUTS[name] for name in due if name in FANOUTS):
            if tasks := rng.randint(fanout.fewest, fanout.most):
                rows.append(Row(at, tasks, fanout.seconds))
    return rows


def waves() -> list[Row]:
    """30 tasks of 3 s every 70 s, six times, over one 2 s task every 10 s."""
    rows = []
    for wave in range(6):
        rows.append(Row(wave * 70.0, 30, 3.0))
        rows += [Row(wave * 70.0 + tick, 1, 2.0) for tick in range(10, 70, 10)]
    return rows


def ramp(seed: int = RAMP_SEED) -> list[Row]:
    """Every 5 s for 300 s a few 3 s tasks more, with noise."""
    rng = random.Random(seed)
    return [Row(float(t), max(0, t // 40 + rng.randint(-1, 2)), 3.0) for t in range(0, 300, 5)]


@dataclass(frozen=True)
class Generated:
    name: str
    make: Callable[[], list[Row]]
    about: str

    @property
    def path(self) -> Path:
        return BENCH / f"{self.name}{SUFFIX}"

    def text(self) -> str:
        return render(self.make(),
                      f"{self.about}\nmade by python bench/_traces.py, which says how")


GENERATED = (
    Generated("beat", beat, "beat: one hour of Metamapper's default beat (hour 0), a minute "
              f"every {BEAT_MINUTE_SECONDS:g} s (seed {BEAT_SEED})"),
    Generated("waves", waves, "waves: 30 tasks of 3 s every 70 s, six times, over one 2 s "
              "task every 10 s,\nthen idle (the replay's tail)"),
    Generated("ramp", ramp, f"ramp: a slow ramp with noise (seed {RAMP_SEED})"),
)


def main() -> None:
    for trace in GENERATED:
        trace.path.write_text(trace.text())
        print(trace.path)


if __name__ == "__main__":
    main()
