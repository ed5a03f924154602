"""Pictures of a run (matplotlib, Agg backend: no display needed): ``make demo``'s
backlog, workers and completions over time, and the trace benchmark's configurations side
by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


@dataclass(frozen=True)
class Moment:
    """What the demo saw at one instant (seconds since it started)."""

    at: float
    backlog: Mapping[str, int]   # by pool
    workers: Mapping[str, int]   # ready pods by pool
    done: int                    # tasks completed so far


@dataclass
class Timeline:
    moments: list[Moment] = field(default_factory=list)

    def add(self, moment: Moment) -> None:
        self.moments.append(moment)

    def pools(self) -> list[str]:
        return list(dict.fromkeys(p for m in self.moments for p in (*m.backlog, *m.workers)))


def demo_picture(timeline: Timeline, path: Path, title: str) -> Path:
    """Three panels over one time axis: backlog per pool, workers per pool, completions."""
    fig, (backlog, workers, done) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    at = [m.at for m in timeline.moments]
    for pool in timeline.pools():
        backlog.step(at, [m.backlog.get(pool, 0) for m in timeline.moments], where="post",
                     label=pool)
        workers.step(at, [m.workers.get(pool, 0) for m in timeline.moments], where="post",
                     label=pool)
    done.plot(at, [m.done for m in timeline.moments], color="tab:green")
    backlog.set_ylabel("backlog (messages)")
    workers.set_ylabel("ready worker pods")
    done.set_ylabel("tasks completed")
    done.set_xlabel("seconds since the demo started")
    for axes in (backlog, workers, done):
        axes.grid(alpha=0.3)
    backlog.legend(title="pool", loc="upper right")
    workers.legend(title="pool", loc="upper right")
    fig.suptitle(title)
    return _save(fig, path)


@dataclass(frozen=True)
class Replay:
    """One configuration's run of the trace, in seconds since the trace started."""

    label: str
    sent: Sequence[float]
    started: Sequence[float]
    done: Sequence[float]
    ready: Sequence[tuple[float, int]]   # (time, ready pods): at 0, then at every change
    horizon: float


def _count_until(times: Sequence[float], grid: Sequence[float]) -> list[int]:
    ordered, out, i = sorted(times), [], 0
    for t in grid:
        while i < len(ordered) and ordered[i] <= t:
            i += 1
        out.append(i)
    return out


def replay_picture(replays: Sequence[Replay], path: Path, title: str) -> Path:
    """One column per configuration, on shared axes: ready workers above; tasks waiting
    (sent, not started) and completed below."""
    fig, axes = plt.subplots(2, len(replays), sharex=True, sharey="row",
                             figsize=(4.5 * len(replays), 6), squeeze=False)
    for column, replay in enumerate(replays):
        top, bottom = axes[0][column], axes[1][column]
        grid = [i * replay.horizon / 600 for i in range(601)]
        steps = [*replay.ready, (replay.horizon, replay.ready[-1][1])]
        top.step([t for t, _ in steps], [n for _, n in steps], where="post",
                 color="tab:blue")
        top.set_title(replay.label)
        sent, started = _count_until(replay.sent, grid), _count_until(replay.started, grid)
        bottom.plot(grid, [s - b for s, b in zip(sent, started, strict=True)],
                    color="tab:red", label="waiting")
        bottom.plot(grid, _count_until(replay.done, grid), color="tab:green",
                    label="completed")
        bottom.set_xlabel("seconds since the trace started")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("ready worker pods")
    axes[1][0].set_ylabel("tasks")
    axes[1][0].legend(loc="upper right")
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
