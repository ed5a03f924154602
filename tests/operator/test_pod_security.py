"""The pods the builders produce pass the "restricted" Pod Security Standard for real."""

from __future__ import annotations

import json

from devenv.waiting import wait_until
from tests.conftest import Cluster
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply, broker_secret, fleet, items


def _restricted(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("label", "namespace", namespace,
                    "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")


def test_worker_and_scheduler_pods_are_admitted_under_restricted(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    _restricted(cluster, namespace)
    apply(cluster, namespace, broker_secret(), fleet())

    def pods() -> set[str]:
        return {p["metadata"]["labels"]["app.kubernetes.io/component"]
                for p in items(cluster, namespace, "pods")}

    # The real ReplicaSet controller creates them; PodSecurity admission would refuse.
    assert wait_until(lambda: pods() == {"worker", "scheduler"} and pods(),
                      what="worker and scheduler pods") == {"worker", "scheduler"}
    refused = json.loads(cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                         "reason=FailedCreate", "-o", "json").stdout)["items"]
    assert refused == []


def test_a_weakened_security_context_is_refused_by_admission(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """The control: the same check does catch a pod that breaks the standard."""
    _restricted(cluster, namespace)
    apply(cluster, namespace, broker_secret(),
          fleet(containerSecurityContext={"allowPrivilegeEscalation": True}))

    def refusals() -> list[str]:
        out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                              "reason=FailedCreate", "-o", "json").stdout
        return [e["message"] for e in json.loads(out)["items"]]

    messages = wait_until(refusals, what="FailedCreate events")
    assert any('violates PodSecurity "restricted' in m for m in messages), messages
    assert items(cluster, namespace, "pods") == []
