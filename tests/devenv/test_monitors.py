"""The chart's monitors as plain scrape jobs over listed pods (devenv.monitors); that a real
Prometheus applies them as intended is tests/devenv/test_dashboard_prometheus.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devenv.monitors import (
    META,
    MonitorError,
    label_name,
    pod_monitor_jobs,
    pod_target_groups,
    scrape_jobs,
    service_monitor_jobs,
)

TARGETS = Path("/run/pods.json")
POD_MONITOR = {
    "kind": "PodMonitor",
    "metadata": {"name": "mmo-workers", "namespace": "metamapper-system"},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/managed-by": "metamapper-operator",
                                     "app.kubernetes.io/component": "worker"}},
        "namespaceSelector": {"any": True},
        "podMetricsEndpoints": [{
            "port": "metrics", "path": "/metrics", "interval": "30s",
            "relabelings": [
                {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
                 "targetLabel": "metamapper"},
                {"sourceLabels": ["__meta_kubernetes_pod_label_metamapper_io_pool"],
                 "targetLabel": "pool", "action": "Replace"},
            ]}],
    },
}
SERVICE = {
    "kind": "Service",
    "metadata": {"name": "mmo-metrics", "namespace": "metamapper-system",
                 "labels": {"app.kubernetes.io/name": "metamapper-operator",
                            "app.kubernetes.io/instance": "mmo", "helm.sh/chart": "x"}},
    "spec": {"selector": {"app.kubernetes.io/name": "metamapper-operator",
                          "app.kubernetes.io/instance": "mmo"},
             "ports": [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]},
}
SERVICE_MONITOR = {
    "kind": "ServiceMonitor",
    "metadata": {"name": "mmo", "namespace": "metamapper-system"},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "metamapper-operator",
                                     "app.kubernetes.io/instance": "mmo"}},
        "namespaceSelector": {"matchNames": ["metamapper-system"]},
        "endpoints": [{"port": "metrics", "path": "/metrics", "honorLabels": True}],
    },
}


def pod(name: str, phase: str = "Running", ip: str | None = "10.213.0.7",
        ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "demo",
                     "labels": {"app.kubernetes.io/instance": "fleet",
                                "metamapper.io/pool": "default"}},
        "spec": {"nodeName": "node-1", "containers": [
            {"name": "worker", "ports": [{"name": "metrics", "containerPort": 9808,
                                          "protocol": "TCP"}]},
            {"name": "sidecar"},
            {"name": "flower", "ports": [{"containerPort": 5555}]},
        ]},
        "status": {"phase": phase, **({"podIP": ip} if ip else {}),
                   "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_label_keys_are_sanitized_as_prometheus_does() -> None:
    assert label_name("app.kubernetes.io/instance") == "app_kubernetes_io_instance"
    assert label_name("metamapper.io/pool-name") == "metamapper_io_pool_name"


def test_a_pod_is_one_target_per_container_port_with_kubernetes_discovery_labels() -> None:
    groups = pod_target_groups([pod("w-1")])
    assert [g["targets"] for g in groups] == [["10.213.0.7:9808"], ["10.213.0.7:5555"]]
    worker, flower = (g["labels"] for g in groups)
    assert worker[f"{META}namespace"] == "demo"
    assert worker[f"{META}pod_name"] == "w-1"
    assert worker[f"{META}pod_label_app_kubernetes_io_instance"] == "fleet"
    assert worker[f"{META}pod_labelpresent_metamapper_io_pool"] == "true"
    assert worker[f"{META}pod_container_name"] == "worker"
    assert worker[f"{META}pod_container_port_name"] == "metrics"
    assert worker[f"{META}pod_container_port_number"] == "9808"
    assert worker[f"{META}pod_ready"] == "true"
    assert flower[f"{META}pod_container_port_name"] == ""
    assert flower[f"{META}pod_container_port_protocol"] == "TCP"


def test_pods_without_an_ip_or_finished_are_no_targets() -> None:
    groups = pod_target_groups([pod("pending", "Pending", ip=None), pod("done", "Succeeded"),
                                pod("failed", "Failed"), pod("starting", ready=False)])
    assert {g["labels"][f"{META}pod_name"] for g in groups} == {"starting"}
    assert groups[0]["labels"][f"{META}pod_ready"] == "false"


def rules(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job["relabel_configs"])


def test_a_pod_monitor_keeps_its_pods_and_port_then_applies_its_relabelings() -> None:
    [job] = pod_monitor_jobs(POD_MONITOR, TARGETS, "5s")
    assert job["job_name"] == "podMonitor/metamapper-system/mmo-workers/0"
    assert job["file_sd_configs"] == [{"files": [str(TARGETS)], "refresh_interval": "5s"}]
    assert (job["scrape_interval"], job["metrics_path"], job["honor_labels"]) == (
        "5s", "/metrics", False)
    keeps = {r["source_labels"][0]: r["regex"] for r in rules(job) if r.get("action") == "keep"}
    assert keeps == {
        f"{META}pod_label_app_kubernetes_io_managed_by": r"metamapper\-operator",
        f"{META}pod_label_app_kubernetes_io_component": "worker",
        f"{META}pod_container_port_name": "metrics",
    }, "every namespace (any: true): no namespace rule"
    targets = {r["target_label"]: r.get("source_labels", r.get("replacement"))
               for r in rules(job) if "target_label" in r}
    assert targets == {
        "namespace": [f"{META}namespace"], "container": [f"{META}pod_container_name"],
        "pod": [f"{META}pod_name"], "job": "metamapper-system/mmo-workers",
        "endpoint": "metrics",
        "metamapper": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "pool": ["__meta_kubernetes_pod_label_metamapper_io_pool"],
    }
    # The monitor's own relabelings come last, in Prometheus' spelling.
    assert rules(job)[-1] == {"source_labels": [f"{META}pod_label_metamapper_io_pool"],
                              "target_label": "pool", "action": "replace"}


def test_a_pod_monitor_limited_to_namespaces_keeps_only_theirs() -> None:
    monitor = {**POD_MONITOR, "spec": {**POD_MONITOR["spec"],
                                       "namespaceSelector": {"matchNames": ["a", "b.c"]}}}
    [job] = pod_monitor_jobs(monitor, TARGETS, "5s")
    assert {"action": "keep", "source_labels": [f"{META}namespace"],
            "regex": r"a|b\.c"} in rules(job)


def test_match_expressions_are_refused_not_ignored() -> None:
    monitor = {**POD_MONITOR, "spec": {**POD_MONITOR["spec"], "selector": {
        "matchExpressions": [{"key": "a", "operator": "Exists"}]}}}
    with pytest.raises(MonitorError, match="matchExpressions"):
        pod_monitor_jobs(monitor, TARGETS, "5s")


def test_a_service_monitor_scrapes_the_pods_its_service_selects() -> None:
    [job] = service_monitor_jobs(SERVICE_MONITOR, [SERVICE], TARGETS, "5s")
    assert job["honor_labels"] is True
    keeps = {r["source_labels"][0]: r["regex"] for r in rules(job) if r.get("action") == "keep"}
    assert keeps == {
        f"{META}namespace": r"metamapper\-system",
        f"{META}pod_label_app_kubernetes_io_name": r"metamapper\-operator",
        f"{META}pod_label_app_kubernetes_io_instance": "mmo",
        f"{META}pod_container_port_name": "metrics",   # the Service port's targetPort
    }
    assert {"target_label": "job", "replacement": "mmo-metrics"} in rules(job)
    assert {"target_label": "service", "replacement": "mmo-metrics"} in rules(job)


def test_a_numeric_target_port_keeps_the_container_port_number() -> None:
    service = {**SERVICE, "spec": {**SERVICE["spec"], "ports": [
        {"name": "metrics", "port": 80, "targetPort": 9090}]}}
    [job] = service_monitor_jobs(SERVICE_MONITOR, [service], TARGETS, "5s")
    assert {"action": "keep", "source_labels": [f"{META}pod_container_port_number"],
            "regex": "9090"} in rules(job)


def test_a_service_monitor_selecting_no_service_is_an_error() -> None:
    elsewhere = {**SERVICE, "metadata": {**SERVICE["metadata"], "namespace": "other"}}
    with pytest.raises(MonitorError, match="selects 0 Services"):
        service_monitor_jobs(SERVICE_MONITOR, [elsewhere], TARGETS, "5s")


def test_scrape_jobs_translate_every_monitor_of_a_rendered_chart() -> None:
    jobs = scrape_jobs([SERVICE, POD_MONITOR, SERVICE_MONITOR, {"kind": "Deployment"}],
                       TARGETS, "5s")
    assert [j["job_name"] for j in jobs] == ["podMonitor/metamapper-system/mmo-workers/0",
                                             "serviceMonitor/metamapper-system/mmo/0"]


def test_a_service_without_the_monitors_port_is_an_error() -> None:
    service = {**SERVICE, "spec": {**SERVICE["spec"], "ports": [{"name": "http", "port": 80}]}}
    with pytest.raises(MonitorError, match="has no port metrics"):
        service_monitor_jobs(SERVICE_MONITOR, [service], TARGETS, "5s")
