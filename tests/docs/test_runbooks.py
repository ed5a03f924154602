"""Every alert of the chart's PrometheusRule has a runbook page in docs/runbooks/ and a
runbook_url annotation pointing to it (the base is the chart value
metrics.prometheusRule.runbookBaseURL)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.controlplane import tool_dirs

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "metamapper-operator"
RUNBOOKS = REPO / "docs" / "runbooks"
SECTIONS = ("## What it means", "## How to check", "## What to do")


def alerts(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The alerting rules of the chart's PrometheusRule, rendered by helm."""
    values = {"metrics": {"prometheusRule": {"enabled": True, **(extra or {})}}}
    _, helm = tool_dirs()
    out = subprocess.run([str(helm / "helm"), "template", "mmo", str(CHART), "--namespace",
                          "metamapper-system", "--values", "-"], input=json.dumps(values),
                         capture_output=True, text=True, check=True, timeout=120).stdout
    rules = next(doc for doc in yaml.safe_load_all(out)
                 if doc and doc["kind"] == "PrometheusRule")
    found = [rule for group in rules["spec"]["groups"] for rule in group["rules"]
             if "alert" in rule]
    assert found, "the PrometheusRule has no alert"
    return found


@pytest.fixture(scope="module")
def default_alerts() -> list[dict[str, Any]]:
    return alerts()


def test_every_alert_has_a_runbook_page(default_alerts: list[dict[str, Any]]) -> None:
    for rule in default_alerts:
        page = RUNBOOKS / f"{rule['alert']}.md"
        assert page.exists(), f"alert {rule['alert']} has no runbook: write {page}"
        text = page.read_text()
        assert text.startswith(f"# {rule['alert']}\n")
        missing = [s for s in SECTIONS if s not in text]
        assert not missing, f"{page.name} lacks {missing}"


def test_every_alert_links_its_runbook(default_alerts: list[dict[str, Any]]) -> None:
    base = yaml.safe_load((CHART / "values.yaml").read_text())[
        "metrics"]["prometheusRule"]["runbookBaseURL"]
    for rule in default_alerts:
        assert rule["annotations"].get("runbook_url") == f"{base}/{rule['alert']}/", rule


def test_runbook_base_is_a_chart_value() -> None:
    for rule in alerts({"runbookBaseURL": "https://docs.example.org/mmo/runbooks/"}):
        assert rule["annotations"]["runbook_url"] == (
            f"https://docs.example.org/mmo/runbooks/{rule['alert']}/")


def test_every_runbook_page_is_an_alert(default_alerts: list[dict[str, Any]]) -> None:
    """No runbook outlives its alert."""
    names = {rule["alert"] for rule in default_alerts}
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"index"}
    assert pages == names
