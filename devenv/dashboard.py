"""The chart's Grafana dashboard read as Grafana reads it: its panels on the 24-column
grid, each panel's PromQL targets with the template variables filled in, and each
series' name from the target's legend format.

Grafana itself cannot be had here (it is not in Debian and its Go module is not served),
so ``devenv.pictures.dashboard_picture`` draws what :func:`draw` gets from a real
Prometheus: the dashboard's own queries and layout, not Grafana's rendering of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devenv.controlplane import REPO
from devenv.errors import DevenvError

if TYPE_CHECKING:
    from devenv.prometheus import Series

DASHBOARD = REPO / "charts" / "metamapper-operator" / "files" / "dashboard.json"
#: Grafana's grid: 24 columns wide.
GRID_COLUMNS = 24
#: ``$name``, ``${name}``, ``${name:format}`` and the old ``[[name]]``.
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class DashboardError(DevenvError):
    """The dashboard has what this reading does not do; the message names it."""


@dataclass(frozen=True)
class GridPos:
    """Where a panel sits: column ``x`` of 24, row ``y``, ``w`` columns by ``h`` rows."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Target:
    expr: str
    legend_format: str


@dataclass(frozen=True)
class Panel:
    title: str
    grid: GridPos
    unit: str
    targets: tuple[Target, ...]
    #: Where the legend goes: "right", "bottom", or "" when it is hidden.
    legend: str = "bottom"


@dataclass(frozen=True)
class Dashboard:
    title: str
    panels: tuple[Panel, ...]
    #: Each template variable's value when "All" is chosen (Grafana's first choice).
    variables: Mapping[str, str]

    @property
    def rows(self) -> int:
        """The grid's height in rows."""
        return max(p.grid.y + p.grid.h for p in self.panels)


@dataclass(frozen=True)
class Line:
    """One series of a panel, named by its target's legend format."""

    label: str
    times: list[float]
    values: list[float]


@dataclass(frozen=True)
class DrawnPanel:
    panel: Panel
    lines: tuple[Line, ...]


def all_values(templating: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each query variable's "All" value (its ``allValue``). A data source variable names
    the one Prometheus and is not substituted; any other kind is refused."""
    values = {}
    for variable in templating:
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            continue
        if kind != "query" or not variable.get("includeAll") or "allValue" not in variable:
            raise DashboardError(f"variable {name} ({kind}): only query variables with an "
                                 "allValue are filled in")
        values[name] = variable["allValue"]
    return values


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with its variables replaced by ``values``; an unknown one is an error (a
    query Grafana would fill in and this reading would send half-made)."""
    def value(found: re.Match[str]) -> str:
        name = next(group for group in found.groups() if group)
        if name not in values:
            raise DashboardError(f"unknown variable ${name} in {text!r}")
        return values[name]

    return VARIABLE.sub(value, text)


def legend(legend_format: str, labels: Mapping[str, str]) -> str:
    """A series' name as Grafana makes it: the legend format with ``{{label}}`` replaced
    (by nothing when the series has no such label), or ``{a="b", ...}`` when empty."""
    if not legend_format:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return LEGEND_LABEL.sub(lambda found: labels.get(found.group(1), ""), legend_format)


def _panel(data: Mapping[str, Any]) -> Panel:
    title = data.get("title", "")
    if data.get("type") != "timeseries":
        raise DashboardError(f"panel {title!r}: type {data.get('type')!r} is not drawn "
                             "(only timeseries)")
    grid = GridPos(**{k: int(data["gridPos"][k]) for k in ("x", "y", "w", "h")})
    if grid.x < 0 or grid.w <= 0 or grid.x + grid.w > GRID_COLUMNS:
        raise DashboardError(f"panel {title!r}: {grid} is outside the 24-column grid")
    unit = (data.get("fieldConfig") or {}).get("defaults", {}).get("unit", "short")
    targets = tuple(Target(t["expr"], t.get("legendFormat", ""))
                    for t in data.get("targets") or [] if not t.get("hide"))
    shown = (data.get("options") or {}).get("legend") or {}
    placement = shown.get("placement", "bottom") if shown.get("showLegend", True) else ""
    return Panel(title, grid, unit, targets, placement)


def read(data: Mapping[str, Any]) -> Dashboard:
    """A dashboard's JSON model as a :class:`Dashboard`."""
    panels = tuple(_panel(p) for p in data["panels"])
    if not panels:
        raise DashboardError("the dashboard has no panel")
    return Dashboard(data["title"], panels,
                     all_values((data.get("templating") or {}).get("list") or []))


def load(path: Path = DASHBOARD) -> Dashboard:
    return read(json.loads(path.read_text()))


def draw(dashboard: Dashboard, query: Callable[[str], list[Series]]) -> list[DrawnPanel]:
    """Every panel with the series its targets' queries return, each query asked with the
    variables filled in."""
    drawn = []
    for panel in dashboard.panels:
        lines = [Line(legend(target.legend_format, series.labels), series.times,
                      series.values)
                 for target in panel.targets
                 for series in query(substitute(target.expr, dashboard.variables))]
        drawn.append(DrawnPanel(panel, tuple(lines)))
    return drawn
