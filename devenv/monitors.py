"""The chart's ServiceMonitor and PodMonitor as plain Prometheus scrape jobs, for a
Prometheus without the Prometheus operator and without Kubernetes discovery.

Debian's Prometheus is built without ``kubernetes_sd_configs``, so the pods are listed
through the Kubernetes API by the caller and written to a file (``file_sd_configs``) as the
target groups Prometheus' Kubernetes discovery (role ``pod``) makes of them: one target per
container port, with the same ``__meta_kubernetes_*`` labels (:func:`pod_target_groups`).
Each monitor becomes a job over that file whose relabelings are those the Prometheus
operator generates for it (keep the selected pods and port, label the series with
``namespace``, ``pod``, ``container``, ``job`` and ``endpoint``) followed by the monitor's
own, so the series carry the labels they carry under the Prometheus operator and the
dashboard's queries read them as they would there.

A ServiceMonitor selects a Service whose endpoints are scraped; here its job scrapes the
pods the Service selects, on the container port the Service port targets, and labels the
series with the Service's name as the Prometheus operator does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devenv.errors import DevenvError

META = "__meta_kubernetes_"


class MonitorError(DevenvError):
    """A monitor asks for what this translation does not do; the message says what."""


def label_name(key: str) -> str:
    """A Kubernetes label key as Prometheus names it in meta labels (its sanitizing)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def pod_target_groups(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The target groups of role ``pod`` discovery: one per container port of every pod
    that has an IP and has not finished."""
    groups = []
    for pod in pods:
        meta, status = pod["metadata"], pod.get("status") or {}
        ip = status.get("podIP")
        if not ip or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
        labels = {
            f"{META}namespace": meta["namespace"],
            f"{META}pod_name": meta["name"],
            f"{META}pod_ip": ip,
            f"{META}pod_phase": status.get("phase", ""),
            f"{META}pod_ready": str(ready).lower(),
            f"{META}pod_node_name": pod["spec"].get("nodeName", ""),
        }
        for key, value in (meta.get("labels") or {}).items():
            labels[f"{META}pod_label_{label_name(key)}"] = value
            labels[f"{META}pod_labelpresent_{label_name(key)}"] = "true"
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **labels,
                    f"{META}pod_container_name": container["name"],
                    f"{META}pod_container_port_name": port.get("name", ""),
                    f"{META}pod_container_port_number": str(port["containerPort"]),
                    f"{META}pod_container_port_protocol": port.get("protocol", "TCP"),
                }})
    return groups


def _keep(source: str, regex: str) -> dict[str, Any]:
    return {"action": "keep", "source_labels": [source], "regex": regex}


def _set(target: str, *, source: str | None = None, value: str | None = None
         ) -> dict[str, Any]:
    rule: dict[str, Any] = {"target_label": target}
    if source is not None:
        rule["source_labels"] = [source]
    if value is not None:
        rule["replacement"] = value
    return rule


def _one_of(values: Iterable[str]) -> str:
    return "|".join(re.escape(value) for value in values)


def _selected(selector: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Keep rules for a label selector's ``matchLabels`` (``matchExpressions`` are refused:
    the chart's monitors do not use them)."""
    if selector.get("matchExpressions"):
        raise MonitorError("label selectors with matchExpressions are not translated")
    return [_keep(f"{META}pod_label_{label_name(key)}", re.escape(value))
            for key, value in (selector.get("matchLabels") or {}).items()]


def _in_namespaces(names: Iterable[str]) -> dict[str, Any]:
    return _keep(f"{META}namespace", _one_of(names))


def _namespaces(monitor: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Keep rules for a monitor's ``namespaceSelector`` (its own namespace by default)."""
    chosen = monitor["spec"].get("namespaceSelector") or {}
    if chosen.get("any"):
        return []
    return [_in_namespaces(chosen.get("matchNames") or [monitor["metadata"]["namespace"]])]


def _snake(key: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", key).lower()


def _own(relabelings: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A monitor's relabelings in Prometheus' spelling (``sourceLabels`` is
    ``source_labels``; the Prometheus operator lowercases the action too)."""
    return [{_snake(key): value.lower() if key == "action" else value
             for key, value in rule.items()} for rule in relabelings]


def _job(name: str, endpoint: Mapping[str, Any], targets_file: Path, interval: str,
         relabel: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "job_name": name,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "scrape_interval": interval,
        "scrape_timeout": interval,
        "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
        "relabel_configs": [
            {"action": "drop", "source_labels": [f"{META}pod_phase"],
             "regex": "Failed|Succeeded"},
            *relabel,
            _set("namespace", source=f"{META}namespace"),
            _set("container", source=f"{META}pod_container_name"),
            _set("pod", source=f"{META}pod_name"),
            *_own(endpoint.get("relabelings") or []),
        ],
    }


def _port(port: str | int) -> dict[str, Any]:
    if isinstance(port, int):
        return _keep(f"{META}pod_container_port_number", str(port))
    return _keep(f"{META}pod_container_port_name", re.escape(port))


def pod_monitor_jobs(monitor: Mapping[str, Any], targets_file: Path, interval: str
                     ) -> list[dict[str, Any]]:
    """A PodMonitor's jobs, one per endpoint."""
    namespace, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    select = _namespaces(monitor) + _selected(monitor["spec"]["selector"])
    return [_job(f"podMonitor/{namespace}/{name}/{i}", endpoint, targets_file, interval, [
        *select, _port(endpoint["port"]),
        _set("job", value=f"{namespace}/{name}"),
        _set("endpoint", value=str(endpoint["port"])),
    ]) for i, endpoint in enumerate(monitor["spec"]["podMetricsEndpoints"])]


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return (selector.get("matchLabels") or {}).items() <= labels.items()


def service_monitor_jobs(monitor: Mapping[str, Any], services: Iterable[Mapping[str, Any]],
                         targets_file: Path, interval: str) -> list[dict[str, Any]]:
    """A ServiceMonitor's jobs, one per endpoint: the pods its one Service selects, on the
    container port the Service's named port targets."""
    namespace, name = monitor["metadata"]["namespace"], monitor["metadata"]["name"]
    allowed = (monitor["spec"].get("namespaceSelector") or {}).get("matchNames") or [
        namespace]
    chosen = [s for s in services if s["metadata"]["namespace"] in allowed
              and _matches(monitor["spec"]["selector"], s["metadata"].get("labels") or {})]
    if len(chosen) != 1:
        raise MonitorError(f"ServiceMonitor {name} selects {len(chosen)} Services; "
                           "one is translated")
    [service] = chosen
    service_name = service["metadata"]["name"]
    jobs = []
    for i, endpoint in enumerate(monitor["spec"]["endpoints"]):
        ports = [p for p in service["spec"]["ports"] if p.get("name") == endpoint["port"]]
        if not ports:
            raise MonitorError(f"Service {service_name} has no port {endpoint['port']}")
        port = ports[0]
        jobs.append(_job(f"serviceMonitor/{namespace}/{name}/{i}", endpoint, targets_file,
                         interval, [
            _in_namespaces([service["metadata"]["namespace"]]),
            *_selected({"matchLabels": service["spec"]["selector"]}),
            _port(port.get("targetPort", port["port"])),
            _set("service", value=service_name),
            _set("job", value=service_name),
            _set("endpoint", value=endpoint["port"]),
        ]))
    return jobs


def scrape_jobs(objects: Iterable[Mapping[str, Any]], targets_file: Path, interval: str
                ) -> list[dict[str, Any]]:
    """The jobs of every ServiceMonitor and PodMonitor among ``objects`` (a rendered
    chart), each scraping every ``interval`` the pods listed in ``targets_file``."""
    objects = list(objects)
    services = [o for o in objects if o["kind"] == "Service"]
    jobs: list[dict[str, Any]] = []
    for monitor in objects:
        if monitor["kind"] == "PodMonitor":
            jobs += pod_monitor_jobs(monitor, targets_file, interval)
        elif monitor["kind"] == "ServiceMonitor":
            jobs += service_monitor_jobs(monitor, services, targets_file, interval)
    return jobs
