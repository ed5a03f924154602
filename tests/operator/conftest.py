"""The operator as users run it: the ``metamapper-operator`` process against the cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from metamapper_operator.devenv.controlplane import free_port
from tests.chart_helpers import ChartAccess, install_chart_access, uninstall_chart_access
from tests.conftest import Cluster
from tests.helpers import wait_until

RESYNC_SECONDS = 2.0
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    liveness_port: int
    metrics_port: int

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_operator(kubeconfig: Path, log: Path, *extra: str) -> OperatorProcess:
    """Start ``metamapper-operator`` and wait for its liveness endpoint."""
    liveness, metrics = free_port(), free_port()
    binary = Path(sys.executable).parent / "metamapper-operator"
    out = log.open("ab")
    proc = subprocess.Popen(
        [str(binary), "--liveness-port", str(liveness), "--metrics-port", str(metrics),
         "--resync-interval", str(RESYNC_SECONDS), "--poll-interval", "1", *extra],
        stdout=out, stderr=subprocess.STDOUT,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    out.close()
    running = OperatorProcess(proc, log, liveness, metrics)
    wait_until(lambda: running.healthy() or proc.poll() is not None, timeout=60,
               what="the operator's liveness endpoint")
    if proc.poll() is not None:
        raise AssertionError(f"the operator exited:\n{running.output()[-3000:]}")
    return running


@pytest.fixture(scope="session")
def operator_access(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[ChartAccess]:
    """The Helm chart's ServiceAccount and RBAC (default values), with a real token.

    Every operator scenario runs with exactly the access an installed operator has.
    """
    namespace = f"operator-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    access = install_chart_access(cluster, namespace, {},
                                  tmp_path_factory.mktemp("access") / "kubeconfig")
    yield access
    uninstall_chart_access(access)
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


@pytest.fixture(scope="session")
def operator(operator_access: ChartAccess, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[OperatorProcess]:
    running = start_operator(operator_access.kubeconfig,
                             tmp_path_factory.mktemp("operator") / "log")
    yield running
    running.stop()
    output = running.output()
    assert "Traceback" not in output, output[-5000:]
    denied = [line for line in output.splitlines() if " 403 " in line
              and "because it is being terminated" not in line]  # tests' namespaces go
    assert denied == [], denied


def audit_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Audit records of requests about objects in ``namespace``."""
    events = []
    with cluster.plane.audit_log.open() as log:
        for line in log:
            if f'"namespace":"{namespace}"' in line:
                events.append(json.loads(line))
    return events


def operator_writes(cluster: Cluster, namespace: str) -> list[str]:
    """The writes the operator made in ``namespace``, as 'verb resource/name' strings."""
    writes = []
    for event in audit_events(cluster, namespace):
        agent = event.get("userAgent", "")
        if event["verb"] in WRITE_VERBS and (agent.startswith("metamapper-operator")
                                             or agent.startswith("kopf")):
            ref = event.get("objectRef", {})
            resource = ref.get("resource", "") + (f"/{ref['subresource']}"
                                                  if ref.get("subresource") else "")
            writes.append(f"{event['verb']} {resource}/{ref.get('name', '')}")
    return writes
