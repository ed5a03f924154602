"""The demo's dashboard pipeline without a cluster: a real Prometheus (Debian's) scrapes two
small exporters listed as an operator pod and a worker pod, through the chart's own
ServiceMonitor and PodMonitor (rendered by helm, translated by devenv.monitors), and the
chart's dashboard is drawn from it. Nothing is skipped: a missing Prometheus or helm fails.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from devenv import chart, dashboard, prometheus
from devenv.controlplane import free_port
from devenv.monitors import pod_target_groups
from devenv.pictures import dashboard_picture
from devenv.processes import alive
from devenv.stack import OPERATOR_NAMESPACE, OPERATOR_RELEASE, StackError, spawn, wait_http
from devenv.waiting import wait_until


@contextmanager
def exporter(fill: Any) -> Iterator[int]:
    """A /metrics endpoint on loopback serving what ``fill(registry)`` registers; its
    port."""
    registry = CollectorRegistry()
    fill(registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def operator_series(registry: CollectorRegistry) -> None:
    fleet = {"namespace": "demo", "metamapper": "fleet", "pool": "default"}
    Gauge("metamapper_pool_backlog", "", list(fleet), registry=registry).labels(
        **fleet).set(7)
    Gauge("metamapper_pool_max_replicas", "", list(fleet), registry=registry).labels(
        **fleet).set(10)
    Gauge("metamapper_broker_up", "", ["transport", "broker"], registry=registry).labels(
        "redis", "redis://127.0.0.1:6379/1").set(1)


def worker_series(registry: CollectorRegistry) -> None:
    Gauge("celery_worker_up", "", ["hostname"], registry=registry).labels("w@1").set(1)


def pod(namespace: str, name: str, labels: dict[str, str], port: int) -> dict[str, Any]:
    """A running pod as the Kubernetes API lists it, its one port on loopback."""
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"nodeName": "node", "containers": [
                {"name": "main", "ports": [{"name": "metrics", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def test_the_dashboard_is_drawn_from_prometheus_scraping_as_the_charts_monitors_do(
        tmp_path: Path) -> None:
    targets = tmp_path / "pods.json"
    config = chart.scrape_config(OPERATOR_RELEASE, OPERATOR_NAMESPACE, targets, "1s")
    with exporter(operator_series) as operator_port, exporter(worker_series) as worker_port:
        operator = pod(OPERATOR_NAMESPACE, "operator-0", {
            "app.kubernetes.io/name": "metamapper-operator",
            "app.kubernetes.io/instance": OPERATOR_RELEASE}, operator_port)
        worker = pod("demo", "fleet-default-0", {
            "app.kubernetes.io/managed-by": "metamapper-operator",
            "app.kubernetes.io/component": "worker", "app.kubernetes.io/instance": "fleet",
            "metamapper.io/pool": "default"}, worker_port)
        # Another pod of the operator's with a port named "metrics", not a worker's: the
        # PodMonitor does not select it.
        flower = pod("demo", "fleet-flower-0", {
            "app.kubernetes.io/managed-by": "metamapper-operator",
            "app.kubernetes.io/component": "flower"}, worker_port)
        prometheus.write_targets(targets, pod_target_groups([operator, flower]))
        server = prometheus.start(tmp_path / "prometheus", config)
        try:
            def up() -> dict[str, str]:
                now = time.time()
                return {s.labels["job"]: s.labels["pod"]
                        for s in server.query_range("up == 1", now, now, 1)}

            assert wait_until(up, 30, "the operator pod scraped") == {
                f"{OPERATOR_RELEASE}-metrics": "operator-0"}
            started = time.time()
            # A pod listed later is scraped once the file says so (the demo's refresh).
            prometheus.write_targets(targets, pod_target_groups([operator, flower, worker]))
            assert wait_until(lambda: found if len(found := up()) == 2 else None, 30,
                              "the worker scraped") == {
                f"{OPERATOR_RELEASE}-metrics": "operator-0",
                f"{OPERATOR_NAMESPACE}/{OPERATOR_RELEASE}-workers": "fleet-default-0"}
            wait_until(lambda: server.query_range("celery_worker_up", time.time(),
                                                  time.time(), 1), 30, "a worker sample")
            window = (started, time.time() + 1)

            def query(expr: str) -> list[prometheus.Series]:
                return server.query_range(expr, *window, 1)

            [worker_up] = query("celery_worker_up")
            assert {k: worker_up.labels[k] for k in ("namespace", "metamapper", "pool")} == {
                "namespace": "demo", "metamapper": "fleet", "pool": "default"}
            [backlog] = query("metamapper_pool_backlog")
            assert backlog.labels["namespace"] == "demo", "the series' own namespace kept"
            [broker] = query("metamapper_broker_up")
            assert broker.labels["namespace"] == OPERATOR_NAMESPACE, "the target's namespace"

            board = dashboard.load()
            drawn = {d.panel.title: {line.label: line.values[-1] for line in d.lines}
                     for d in dashboard.draw(board, query)}
            assert drawn["Backlog per pool"] == {"fleet/default": 7.0}
            assert drawn["Workers per pool"] == {"fleet/default max": 10.0,
                                                 "fleet/default workers up": 1.0}
            assert drawn["Brokers"]["redis redis://127.0.0.1:6379/1 up"] == 1.0
            path = dashboard_picture(board, dashboard.draw(board, query), window,
                                     tmp_path / "dashboard.png", "a test")
            assert path.stat().st_size > 10_000
        finally:
            server.stop()


def test_prometheus_refuses_a_bad_query_with_its_reason(tmp_path: Path) -> None:
    server = prometheus.start(tmp_path, {"scrape_configs": []})
    try:
        with pytest.raises(prometheus.PrometheusError, match="parse error"):
            server.query_range("sum(", time.time() - 10, time.time(), 1)
    finally:
        server.stop()


@pytest.mark.parametrize(("found", "answer"), [
    (None, "HTTP 404, not Prometheus' JSON: <!DOCTYPE HTML> <html"),
    ("up 1", "HTTP 200, not Prometheus' JSON: up 1$")], ids=["404 page", "metrics text"])
def test_an_answer_that_is_not_json_is_a_prometheus_error(
        tmp_path: Path, found: str | None, answer: str) -> None:
    """A URL that is not Prometheus' API answers as it pleases: here a plain file server,
    its 404 an HTML page or the path a text file. The caller gets PrometheusError with
    what came back, as for Prometheus' own refusals, not a JSON decoding error."""
    if found is not None:
        (tmp_path / "api" / "v1").mkdir(parents=True)
        (tmp_path / "api" / "v1" / "query_range").write_text(found)
    port = free_port()
    daemon = spawn("http.server", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                   "--directory", str(tmp_path), str(port)],
                   tmp_path / "http.log", env={})
    try:
        wait_http(daemon, f"http://127.0.0.1:{port}/", 30)
        server = prometheus.Prometheus(daemon, f"http://127.0.0.1:{port}")
        with pytest.raises(prometheus.PrometheusError, match=answer):
            server.query_range("up", time.time() - 10, time.time(), 1)
    finally:
        daemon.stop()


@pytest.mark.parametrize("interrupt", [False, True], ids=["not ready in time", "Ctrl-C"])
def test_a_prometheus_that_never_got_ready_is_stopped_not_left_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interrupt: bool) -> None:
    """start() spawns the server in a session of its own, so a Ctrl-C at the terminal
    never reaches it: if the wait for it fails or is interrupted, start stops it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    pid_file = tmp_path / "pid"
    (fake / "prometheus").write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec /bin/sleep 300\n")
    (fake / "prometheus").chmod(0o755)
    monkeypatch.setattr(prometheus, "binaries", lambda: fake)
    real_wait = prometheus.wait_http

    def wait(daemon: Any, url: str, timeout: float) -> None:
        wait_until(pid_file.exists, 10, "the server spawned")
        if interrupt:
            raise KeyboardInterrupt
        real_wait(daemon, url, 1)

    monkeypatch.setattr(prometheus, "wait_http", wait)
    with pytest.raises(KeyboardInterrupt if interrupt else StackError):
        prometheus.start(tmp_path / "prometheus", {"scrape_configs": []})
    assert not alive(int(pid_file.read_text()))
