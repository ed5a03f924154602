"""What the chart refuses or bounds beyond its values schema, with the real helm: names that
must stay valid Kubernetes names, settings the operator cannot run with, clusters too old
for it, and a second release over namespaces another release already serves (each release
elects a leader on a Lease of its own, so both would act)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.chart.helpers import CHART, default_helm, documents, helm, unique
from tests.conftest import Cluster

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def template(values: dict[str, Any], *args: str, release: str = "mmo"
             ) -> subprocess.CompletedProcess[str]:
    """``helm template`` of the chart (no cluster needed); values on stdin."""
    return subprocess.run([str(default_helm()), "template", release, str(CHART), *args,
                           "--values", "-"], input=yaml.safe_dump(values), text=True,
                          capture_output=True, timeout=60)


def metrics_service(values: dict[str, Any], release: str) -> str:
    rendered = template(values, "--show-only", "templates/service.yaml", release=release)
    assert rendered.returncode == 0, rendered.stderr
    (service,) = documents(rendered.stdout)
    return str(service["metadata"]["name"])


@pytest.mark.parametrize(("values", "release"), [
    ({}, "r" * 53),                                   # the longest release name helm takes
    ({"fullnameOverride": "f" * 63}, "mmo"),
    ({"fullnameOverride": "a" * 54 + "-b" + "c" * 7}, "mmo"),  # cut right after a dash
    ({}, "team.fleet"),                               # a release name may hold dots
], ids=["long-release", "long-override", "cut-at-a-dash", "dotted-release"])
def test_the_metrics_service_name_is_a_dns_label(values: dict[str, Any], release: str
                                                 ) -> None:
    name = metrics_service(values, release)
    assert len(name) <= 63 and DNS_LABEL.match(name) and name.endswith("-metrics"), name


def test_the_metrics_service_name_keeps_a_short_full_name() -> None:
    assert metrics_service({}, "mmo") == "mmo-metamapper-operator-metrics"


def test_a_metrics_service_name_that_would_start_with_a_digit_is_refused() -> None:
    result = template({"fullnameOverride": "1fleet"})
    assert result.returncode != 0
    assert 'the metrics Service name would start with "1"' in result.stderr, result.stderr


def test_equal_liveness_and_metrics_ports_are_refused() -> None:
    result = template({"liveness": {"port": 9100}, "metrics": {"port": 9100}})
    assert result.returncode != 0
    assert "liveness.port and metrics.port must differ (both 9100)" in result.stderr, (
        result.stderr)


@pytest.mark.parametrize("poll", [0.5, 0, -1])
def test_a_polling_interval_below_one_second_is_refused(poll: float) -> None:
    result = template({"pollIntervalSeconds": poll})
    assert result.returncode != 0
    assert "at '/pollIntervalSeconds'" in result.stderr, result.stderr


def test_one_second_polling_is_accepted() -> None:
    assert template({"pollIntervalSeconds": 1}).returncode == 0


@pytest.mark.parametrize(("version", "accepted"), [
    ("1.25.0", False), ("1.26.9", False), ("1.27.0", True), ("1.36.3", True)])
def test_clusters_without_pod_scheduling_gates_are_refused(version: str, accepted: bool
                                                           ) -> None:
    result = template({}, "--kube-version", version)
    assert (result.returncode == 0) == accepted, result.stderr
    if not accepted:
        assert "chart requires kubeVersion: >=1.27.0-0" in result.stderr, result.stderr


# --- releases over overlapping namespaces: refused on install and upgrade ---------------


@pytest.fixture
def namespaces(cluster: Cluster) -> Iterator[list[str]]:
    """Four namespaces: two homes for releases and two served ones."""
    names = [unique("overlap") for _ in range(4)]
    for name in names:
        cluster.kubectl("create", "namespace", name)
    yield names
    for name in names:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def install(cluster: Cluster, release: str, namespace: str, values: dict[str, Any],
            *verb: str) -> subprocess.CompletedProcess[str]:
    return helm(cluster, *(verb or ("install",)), release, str(CHART), "--namespace",
                namespace, values={"rbac": {"create": False},
                                   "serviceAccount": {"create": False, "name": "default"},
                                   "metrics": {"service": {"enabled": False}}, **values},
                check=False)


def test_a_release_over_namespaces_another_serves_is_refused(
        cluster: Cluster, namespaces: list[str]) -> None:
    home_a, home_b, team_a, team_b = namespaces
    first, second = unique("first"), unique("second")
    try:
        assert install(cluster, first, home_a, {"watchNamespaces": [team_a]}).returncode == 0
        # Other namespaces: fine, and upgrading the first release does not refuse itself.
        assert install(cluster, second, home_b, {"watchNamespaces": [team_b]}).returncode == 0
        assert install(cluster, first, home_a, {"watchNamespaces": [team_a]},
                       "upgrade").returncode == 0

        overlapping = install(cluster, unique("third"), home_b,
                              {"watchNamespaces": [team_b, "elsewhere"]})
        assert overlapping.returncode != 0
        assert (f"metamapper-operator release {home_b}/{second} already serves {team_b}; "
                f"this release would serve {team_b}, elsewhere") in overlapping.stderr, (
            overlapping.stderr)

        everywhere = install(cluster, unique("fourth"), home_b, {})
        assert everywhere.returncode != 0
        assert "this release would serve every namespace" in everywhere.stderr

        # Widening a release onto another's namespace is refused on upgrade too.
        widened = install(cluster, first, home_a, {"watchNamespaces": [team_a, team_b]},
                          "upgrade")
        assert widened.returncode != 0
        assert f"release {home_b}/{second} already serves {team_b}" in widened.stderr
    finally:
        helm(cluster, "uninstall", first, "--namespace", home_a, check=False)
        helm(cluster, "uninstall", second, "--namespace", home_b, check=False)
