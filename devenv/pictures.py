"""Pictures of a run (matplotlib, Agg backend: no display needed): ``make demo``'s
backlog, workers and completions over time, the chart's dashboard drawn from a real
Prometheus, and the trace benchmark's configurations side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib import ticker
from matplotlib.axes import Axes

from devenv.dashboard import GRID_COLUMNS, Dashboard, DrawnPanel, GridPos


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


# Grafana's dark theme and its classic series palette.
DARK = {"page": "#111217", "panel": "#181b1f", "border": "#2c3235", "text": "#ccccdc",
        "muted": "#8e8e9a"}
PALETTE = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9",
           "#705da0", "#508642", "#cca300"]
#: Inches per column and per row of the dashboard's grid (Grafana: about 75 and 38 pixels).
COLUMN_INCHES, ROW_INCHES, HEADER_INCHES = 0.75, 0.38, 0.75


def _value_formatter(unit: str) -> ticker.Formatter:
    """The y axis' numbers in a panel's unit: seconds with SI prefixes, the rest plain."""
    if unit == "s":
        return ticker.EngFormatter(unit="s", sep=" ")
    suffix = {"ops": " ops/s", "percent": " %"}.get(unit, "")
    return ticker.FuncFormatter(lambda value, _: f"{value:g}{suffix}")


def _dates(times: Sequence[float]) -> list[float]:
    """Seconds since the epoch as matplotlib's dates."""
    return [float(mdates.date2num(datetime.fromtimestamp(t, UTC))) for t in times]


def card_rect(grid: GridPos, rows: int) -> tuple[float, float, float, float]:
    """Where a panel's card goes on a figure of a grid ``rows`` high, below the header:
    (left, bottom, width, height) as fractions of the figure, with a small gap around."""
    height = HEADER_INCHES + rows * ROW_INCHES
    gap_x, gap_y = 0.04 / (GRID_COLUMNS * COLUMN_INCHES), 0.04 / height
    return (grid.x / GRID_COLUMNS + gap_x,
            1 - (HEADER_INCHES + (grid.y + grid.h) * ROW_INCHES) / height + gap_y,
            grid.w / GRID_COLUMNS - 2 * gap_x,
            grid.h * ROW_INCHES / height - 2 * gap_y)


def _panel(fig: plt.Figure, drawn: DrawnPanel, rows: int, window: tuple[float, float]
           ) -> None:
    card = fig.add_axes(card_rect(drawn.panel.grid, rows))
    card.set_facecolor(DARK["panel"])
    card.set_xticks([])
    card.set_yticks([])
    for spine in card.spines.values():
        spine.set_color(DARK["border"])
    card.text(0.012, 0.96, drawn.panel.title, transform=card.transAxes, va="top",
              color=DARK["text"], fontsize=10, weight="bold")
    right = drawn.panel.legend == "right"
    bottom = drawn.panel.legend == "bottom"
    plot: Axes = card.inset_axes((0.07, 0.2 if bottom else 0.12, 0.58 if right else 0.91,
                                  0.62 if bottom else 0.7))
    plot.set_facecolor(DARK["panel"])
    for i, line in enumerate(drawn.lines):
        plot.plot(_dates(line.times), line.values,
                  color=PALETTE[i % len(PALETTE)], linewidth=1.2, label=line.label)
    plot.set_xlim(*_dates(window))
    plot.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    plot.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC))
    plot.yaxis.set_major_formatter(_value_formatter(drawn.panel.unit))
    plot.tick_params(colors=DARK["muted"], labelsize=7)
    plot.grid(color=DARK["border"], linewidth=0.6)
    for spine in plot.spines.values():
        spine.set_visible(False)
    if not drawn.lines:
        plot.set_axis_off()
        plot.text(0.5, 0.5, "No data", transform=plot.transAxes, ha="center", va="center",
                  color=DARK["muted"], fontsize=11)
    elif drawn.panel.legend:
        plot.legend(loc="upper left", bbox_to_anchor=(1.03, 1) if right else (0, -0.16),
                    ncol=1 if right else 3, fontsize=7, frameon=False,
                    labelcolor=DARK["text"], handlelength=1.2)


def dashboard_picture(dashboard: Dashboard, drawn: Sequence[DrawnPanel],
                      window: tuple[float, float], path: Path, note: str) -> Path:
    """The dashboard's panels on its grid, each with the series its queries returned over
    ``window`` (seconds since the epoch), in Grafana's dark colours; ``note`` under the
    title says what the picture is."""
    height = HEADER_INCHES + dashboard.rows * ROW_INCHES
    fig = plt.figure(figsize=(GRID_COLUMNS * COLUMN_INCHES, height), facecolor=DARK["page"])
    fig.text(0.006, 1 - 0.12 / height, dashboard.title, va="top", color=DARK["text"],
             fontsize=14, weight="bold")
    start, end = (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
                  for t in window)
    variables = "   ".join(f"{name}: All" for name in dashboard.variables)
    fig.text(0.006, 1 - 0.42 / height, f"{variables}   {start} to {end} UTC   ({note})",
             va="top", color=DARK["muted"], fontsize=9)
    for panel in drawn:
        _panel(fig, panel, dashboard.rows, window)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, facecolor=DARK["page"])
    plt.close(fig)
    return path


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
