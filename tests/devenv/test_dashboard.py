"""The chart's dashboard read as Grafana reads it (devenv.dashboard) and laid out on its
grid (devenv.pictures); drawn from a real Prometheus in test_dashboard_prometheus.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from matplotlib import image

from devenv.dashboard import (
    DashboardError,
    GridPos,
    Target,
    all_values,
    draw,
    legend,
    load,
    read,
    substitute,
)
from devenv.pictures import COLUMN_INCHES, HEADER_INCHES, ROW_INCHES, card_rect, dashboard_picture
from devenv.prometheus import Series

QUERY_VARIABLE = {"name": "pool", "type": "query", "includeAll": True, "allValue": ".*"}


def panel(**changes: Any) -> dict[str, Any]:
    return {"type": "timeseries", "title": "p", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 8},
            "targets": [{"expr": "up", "legendFormat": "{{job}}"}], **changes}


def test_the_charts_dashboard_is_read_whole() -> None:
    board = load()
    assert board.title == "Metamapper fleet"
    assert len(board.panels) == 10
    assert board.rows == 40
    assert board.variables == {"namespace": ".*", "metamapper": ".*", "pool": ".*"}
    backlog = board.panels[0]
    assert (backlog.title, backlog.grid, backlog.unit, backlog.legend) == (
        "Backlog per pool", GridPos(0, 0, 12, 8), "short", "right")
    assert backlog.targets[0].legend_format == "{{metamapper}}/{{pool}}"
    assert sum(len(p.targets) for p in board.panels) == 19
    for p in board.panels:
        for target in p.targets:
            assert "$" not in substitute(target.expr, board.variables)


@pytest.mark.parametrize("text", ['x{pool=~"$pool"}', 'x{pool=~"${pool}"}',
                                  'x{pool=~"${pool:regex}"}', 'x{pool=~"[[pool]]"}'])
def test_every_spelling_of_a_variable_is_filled_in(text: str) -> None:
    assert substitute(text, {"pool": "a|b"}) == 'x{pool=~"a|b"}'


def test_a_dollar_that_is_no_variable_stays() -> None:
    assert substitute('x{name=~"task$"}', {}) == 'x{name=~"task$"}'


def test_an_unknown_variable_is_refused_not_sent_half_made() -> None:
    with pytest.raises(DashboardError, match=r"\$__rate_interval"):
        substitute("rate(x[$__rate_interval])", {"pool": ".*"})


def test_all_is_each_query_variables_all_value_and_the_data_source_is_not_substituted(
        ) -> None:
    assert all_values([{"name": "datasource", "type": "datasource"}, QUERY_VARIABLE]) == {
        "pool": ".*"}


@pytest.mark.parametrize("variable", [
    {"name": "pool", "type": "custom", "includeAll": True, "allValue": ".*"},
    {"name": "pool", "type": "query", "includeAll": True},
    {"name": "pool", "type": "query", "allValue": ".*"},
])
def test_variables_without_an_all_value_are_refused(variable: dict[str, Any]) -> None:
    with pytest.raises(DashboardError, match="variable pool"):
        all_values([variable])


def test_legends_are_made_as_grafana_makes_them() -> None:
    labels = {"metamapper": "fleet", "pool": "default", "job": "x"}
    assert legend("{{metamapper}}/{{ pool }} pods", labels) == "fleet/default pods"
    assert legend("{{queue}} waiting", labels) == " waiting"
    assert legend("", {"pool": "default", "job": "x"}) == '{job="x", pool="default"}'


def test_only_timeseries_panels_on_the_grid_are_drawn() -> None:
    with pytest.raises(DashboardError, match="type 'stat'"):
        read({"title": "t", "panels": [panel(type="stat")]})
    with pytest.raises(DashboardError, match="outside the 24-column grid"):
        read({"title": "t", "panels": [panel(gridPos={"x": 12, "y": 0, "w": 13, "h": 8})]})
    with pytest.raises(DashboardError, match="no panel"):
        read({"title": "t", "panels": []})


def test_hidden_targets_and_legends_are_left_out() -> None:
    board = read({"title": "t", "panels": [panel(
        targets=[{"expr": "a"}, {"expr": "b", "hide": True}],
        options={"legend": {"showLegend": False, "placement": "right"}})]})
    assert board.panels[0].targets == (Target("a", ""),)
    assert board.panels[0].legend == ""


def test_draw_asks_each_target_with_the_variables_filled_in_and_names_each_series(
        ) -> None:
    board = read({"title": "t", "templating": {"list": [QUERY_VARIABLE]}, "panels": [
        panel(targets=[{"expr": 'a{pool=~"$pool"}', "legendFormat": "{{pool}} a"},
                       {"expr": "b", "legendFormat": "b"}])]})
    asked = []

    def query(expr: str) -> list[Series]:
        asked.append(expr)
        return [Series({"pool": p}, [1.0, 2.0], [3.0, 4.0]) for p in ("x", "y")
                ] if expr.startswith("a") else []

    [drawn] = draw(board, query)
    assert asked == ['a{pool=~".*"}', "b"]
    assert [line.label for line in drawn.lines] == ["x a", "y a"]
    assert drawn.lines[0].values == [3.0, 4.0]


def test_cards_sit_on_the_grid_side_by_side_and_below_one_another() -> None:
    rows = 16
    top_left = card_rect(GridPos(0, 0, 12, 8), rows)
    top_right = card_rect(GridPos(12, 0, 12, 8), rows)
    below = card_rect(GridPos(0, 8, 24, 8), rows)
    assert top_left[0] < 0.01 and top_right[0] == pytest.approx(0.5, abs=0.01)
    assert top_left[0] + top_left[2] < top_right[0]          # a gap between them
    assert top_left[1] == top_right[1]                         # the same row
    assert below[1] + below[3] < top_left[1]                   # under, with a gap
    assert below[2] == pytest.approx(1, abs=0.01)              # the whole width
    assert top_left[1] + top_left[3] < 1 - HEADER_INCHES / (HEADER_INCHES + rows * ROW_INCHES
                                                             ) + 0.01


def test_the_picture_is_the_grid_at_its_size(tmp_path: Path) -> None:
    board = load()
    now = time.time()
    line = Series({"metamapper": "fleet", "pool": "default"}, [now - 60, now], [1.0, 2.0])
    drawn = draw(board, lambda expr: [line] if "backlog" in expr else [])
    path = dashboard_picture(board, drawn, (now - 120, now), tmp_path / "dashboard.png", "a test")
    height, width, _ = image.imread(path).shape
    assert width == round(24 * COLUMN_INCHES * 100)
    assert height == round((HEADER_INCHES + board.rows * ROW_INCHES) * 100)

