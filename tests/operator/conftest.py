"""The operator as users run it: the ``metamapper-operator`` process against the cluster."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv import stack
from devenv.stack import Daemon
from tests.chart.helpers import ChartAccess, install_chart_access, uninstall_chart_access
from tests.conftest import Cluster
from tests.operator.fleet import BROKER_PASSWORD

RESYNC_SECONDS = 2.0
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


OperatorProcess = Daemon


def start_operator(kubeconfig: Path, log: Path, *extra: str) -> Daemon:
    """The real ``metamapper-operator`` process, fast resync and polling for tests."""
    return stack.start_operator(kubeconfig, log, "--resync-interval", str(RESYNC_SECONDS),
                                "--poll-interval", "1", *extra, env=dict(os.environ))


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
    assert BROKER_PASSWORD not in output  # the operator read it from Secrets all session


def audit_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    """Audit records of requests about objects in ``namespace``."""
    events = []
    with cluster.plane.audit_log.open() as log:
        for line in log:
            if f'"namespace":"{namespace}"' in line:
                events.append(json.loads(line))
    return events


def operator_writes(cluster: Cluster, namespace: str) -> list[str]:
    """The writes the operator made in ``namespace``, as 'verb resource/name' strings.

    Renewals of the leader-election Lease are the leader's heartbeat, not work on
    objects: they are left out.
    """
    writes = []
    for event in audit_events(cluster, namespace):
        agent = event.get("userAgent", "")
        ref = event.get("objectRef", {})
        if ref.get("resource") == "leases":
            continue
        if event["verb"] in WRITE_VERBS and (agent.startswith("metamapper-operator")
                                             or agent.startswith("kopf")):
            resource = ref.get("resource", "") + (f"/{ref['subresource']}"
                                                  if ref.get("subresource") else "")
            writes.append(f"{event['verb']} {resource}/{ref.get('name', '')}")
    return writes
