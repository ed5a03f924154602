"""The chart's monitoring objects: the PrometheusRule checked and unit-tested by a real
promtool (Debian's, unpacked by tools/prometheus.sh), and the dashboard and
rules reading only metrics the operator and the worker export."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import metamapper.metrics as worker_metrics
import metamapper_operator.metrics as operator_metrics
from devenv import chart, prometheus
from devenv.scrape import exported
from tests.monitoring.promql import metric_names

ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")
MONITORING = {"metrics": {"workerPodMonitor": {"enabled": True},
                          "grafanaDashboard": {"enabled": True},
                          "prometheusRule": {"enabled": True}}}


@pytest.fixture(scope="module")
def promtool() -> Path:
    """Debian's promtool, unpacked once and cached (tools/prometheus.sh)."""
    return prometheus.binaries() / "promtool"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return chart.render(values, "mmo", "metamapper-system")


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in render(MONITORING)}


@pytest.fixture(scope="module")
def rules_file(rendered: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
               ) -> Path:
    """The rendered PrometheusRule's groups, as a Prometheus rule file."""
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rendered["PrometheusRule"]["spec"]["groups"]}))
    return path


def exported_names() -> set[str]:
    return exported(operator_metrics) | exported(worker_metrics)


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {doc["kind"] for doc in render({})}
    assert not kinds & {"PodMonitor", "PrometheusRule"}
    assert not any(doc["kind"] == "ConfigMap" for doc in render({}))


def test_promtool_accepts_the_rules(promtool: Path, rules_file: Path) -> None:
    result = subprocess.run([str(promtool), "check", "rules", str(rules_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_every_alert_fires_on_synthetic_series(promtool: Path, rules_file: Path) -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = [str(rules_file)]
    fired = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]
             if case.get("exp_alerts")}
    alerts = {rule["alert"] for group in yaml.safe_load(rules_file.read_text())["groups"]
              for rule in group["rules"]}
    assert fired == alerts, "every alert has a case in which it fires"
    path = rules_file.with_name("alerts_test.yaml")
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([str(promtool), "test", "rules", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_expectation_fails_promtool(promtool: Path, rules_file: Path) -> None:
    """The unit tests can fail: an alert expected where the series do not make it fire."""
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = [str(rules_file)]
    case = tests["tests"][0]["alert_rule_test"][0]
    case["eval_time"] = "1m"  # before its "for" has passed
    path = rules_file.with_name("broken_test.yaml")
    path.write_text(yaml.safe_dump(tests))
    result = subprocess.run([str(promtool), "test", "rules", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert case["alertname"] in result.stdout + result.stderr


def test_the_dashboard_reads_only_exported_metrics(rendered: dict[str, dict[str, Any]]) -> None:
    config_map = rendered["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["metamapper-fleet.json"])
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs += [var["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
              for var in dashboard["templating"]["list"] if var["type"] == "query"]
    named = set().union(*(metric_names(expr) for expr in exprs))
    assert named - exported_names() == set()
    # It shows backlog, wait, workers and scale events.
    assert {"metamapper_pool_backlog", "metamapper_task_queue_wait_seconds_bucket",
            "metamapper_pool_current_replicas", "celery_worker_up",
            "metamapper_scale_events_total"} <= named


def test_the_rules_read_only_exported_metrics(rules_file: Path) -> None:
    groups = yaml.safe_load(rules_file.read_text())["groups"]
    named = set().union(*(metric_names(rule["expr"]) for group in groups
                          for rule in group["rules"]))
    assert named and named - exported_names() == set()


def test_promql_names_are_found_and_functions_are_not() -> None:
    expr = ('histogram_quantile(0.95, sum by (pool, le) (rate(x_bucket{a="b", c=~"$d"}[5m])))'
            ' / on (pool) group_left y_total > 0 unless time() - z')
    assert metric_names(expr) == {"x_bucket", "y_total", "z"}
    assert exported(operator_metrics) >= {"metamapper_pool_backlog",
                                          "metamapper_scale_events_total",
                                          "metamapper_probe_duration_seconds_bucket"}
