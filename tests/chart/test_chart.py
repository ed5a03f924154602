"""The Helm chart and the one-file install, with the real helm and kubectl against the real
apiserver (RBAC and PodSecurity admission on): lint, render, install, upgrade, uninstall,
values schema, and the operator's RBAC proven both ways with a real ServiceAccount token."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.waiting import wait_until
from metamapper_operator import crd
from tests.chart.helpers import (
    BASELINE_GRANTS,
    CHART,
    LEASE_RULES,
    OPERATOR_RULES,
    Rule,
    ServiceAccountClient,
    documents,
    dump,
    helm,
    install_chart_access,
    kinds,
    lease_name,
    render,
    rules_of,
    uninstall_chart_access,
    unique,
)
from tests.conftest import REPO, Cluster
from tests.operator.conftest import start_operator
from tests.operator.fleet import apply, broker_secret, fleet, get, items, wait_for_children

INSTALL = REPO / "deploy" / "install.yaml"
INSTALL_NAMESPACE = "metamapper-system"
EXAMPLE_SPEC = next(doc for doc in documents((REPO / "examples" / "metamapper.yaml").read_text())
                    if doc["kind"] == crd.KIND)["spec"]


@contextlib.contextmanager
def new_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace for the block, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/warn": "restricted"}


@pytest.fixture
def restricted_namespace(cluster: Cluster, namespace: str) -> str:
    """The test's namespace, enforcing (and warning about) the "restricted" Pod Security
    Standard: a Pod that violates it is refused, a Deployment that would gets a warning."""
    cluster.kubectl("label", "namespace", namespace, *(f"{k}={v}" for k, v in RESTRICTED.items()))
    return namespace


@pytest.fixture
def served_namespaces(cluster: Cluster) -> Iterator[list[str]]:
    """Two more namespaces, for the chart's namespaced mode (watchNamespaces)."""
    with new_namespace(cluster) as first, new_namespace(cluster) as second:
        yield [first, second]


def non_default_values(served: list[str]) -> dict[str, Any]:
    """Namespaced mode, HA, ServiceMonitor, a Metamapper from values, and most other knobs."""
    return {
        "fullnameOverride": "fleet-operator",
        "replicas": 3,
        "watchNamespaces": served,
        "leaderElection": {"leaseName": "fleet-leader", "leaseDurationSeconds": 20},
        "pollIntervalSeconds": 1,
        "verbose": True,
        "image": {"repository": "registry.example.com/metamapper-operator", "tag": "0.1.0-rc1",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s",
                                       "labels": {"release": "prometheus"}},
                    "workerPodMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                    "grafanaDashboard": {"enabled": True},
                    "prometheusRule": {"enabled": True, "failureRatio": 0.2}},
        "podDisruptionBudget": {"minAvailable": "50%"},
        "networkPolicy": {"enabled": True, "brokerPorts": [6380],
                          "brokerTo": [{"podSelector": {"matchLabels": {"app": "redis"}}}],
                          "metricsFrom": [{"namespaceSelector": {"matchLabels": {
                              "kubernetes.io/metadata.name": "monitoring"}}}]},
        "podLabels": {"team": "data"},
        "podAnnotations": {"example.com/owner": "data"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                         "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100, "podAffinityTerm": {
                "topologyKey": "kubernetes.io/hostname",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name":
                                                  "metamapper-operator"}}}}]}},
        "metamapper": {"enabled": True, "name": "fleet", "namespace": served[0],
                       "spec": EXAMPLE_SPEC},
    }


def dry_run(cluster: Cluster, manifest: str) -> subprocess.CompletedProcess[str]:
    """``kubectl apply --dry-run=server``: the apiserver validates and admits, stores nothing."""
    return cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)


def deployment(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "deployment", name, "-n", namespace,
                                           "-o", "json").stdout))


def pods_created(cluster: Cluster, namespace: str, selector: str, image: str) -> int:
    """Pods of ``image`` the ReplicaSet controller created (admission accepted them); they
    stay Pending, as there is no kubelet."""
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-l", selector,
                                      "-o", "json").stdout)["items"]
    return sum(1 for pod in pods if pod["spec"]["containers"][0]["image"] == image)


def gone(cluster: Cluster, *query: str, namespace: str | None = None) -> bool:
    """True when ``kubectl get QUERY`` (names, or kinds and a selector) finds nothing."""
    scope = ["-n", namespace] if namespace else []
    found = cluster.kubectl("get", *query, *scope, "--ignore-not-found", "-o", "name")
    return not found.stdout.strip()


# --- lint, CRDs, schema ------------------------------------------------------------


@pytest.mark.parametrize("values", [{}, non_default_values(["team-a", "team-b"])],
                         ids=["default-values", "non-default-values"])
def test_helm_lint_is_clean(cluster: Cluster, values: dict[str, Any]) -> None:
    result = helm(cluster, "lint", "--strict", str(CHART), values=values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


def test_chart_ships_the_top_level_crds_unchanged(cluster: Cluster) -> None:
    shown = helm(cluster, "show", "crds", str(CHART)).stdout
    for copied in sorted((REPO / "crds").glob("*.yaml")):
        assert (CHART / "crds" / copied.name).read_bytes() == copied.read_bytes(), (
            f"charts/metamapper-operator/crds/{copied.name} differs from crds/{copied.name}: "
            "run `make manifests`")
        assert copied.read_text() in shown
    names = sorted(doc["metadata"]["name"] for doc in documents(shown))
    assert names == [crd.NAME]


def test_chart_app_version_is_the_operators_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'\nversion = "{chart["appVersion"]}"\n' in pyproject


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": "two"}, "at '/replicas': got string, want integer"),
    ({"replica": 2}, "additional properties 'replica' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "at '/image/pullPolicy'"),
    ({"watchNamespaces": "team-a"}, "at '/watchNamespaces': got string, want array"),
    ({"metrics": {"serviceMonitor": {"interval": 30}}},
     "at '/metrics/serviceMonitor/interval': got number, want string"),
    ({"metamapper": {"enabled": True}},
     "at '/metamapper/spec': missing properties 'image', 'broker', 'pools'"),
], ids=["wrong-type", "typo", "bad-enum", "string-for-list", "number-for-duration",
        "metamapper-without-spec"])
def test_values_schema_refuses_bad_values_with_a_readable_error(
        cluster: Cluster, values: dict[str, Any], message: str) -> None:
    result = helm(cluster, "template", "x", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


def test_template_refuses_a_metamapper_outside_the_served_namespaces(cluster: Cluster) -> None:
    values = {"watchNamespaces": ["team-a"],
              "metamapper": {"enabled": True, "namespace": "team-b", "spec": EXAMPLE_SPEC}}
    result = helm(cluster, "template", "x", str(CHART), values=values, check=False)
    assert result.returncode != 0
    assert 'metamapper.namespace "team-b" is not in watchNamespaces' in result.stderr


# --- rendered objects against the apiserver ----------------------------------------


def test_default_render_is_accepted_and_passes_restricted_pod_security(
        cluster: Cluster, restricted_namespace: str) -> None:
    release = unique("mmo")
    manifest = render(cluster, release, restricted_namespace)
    assert kinds(manifest) == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                               "RoleBinding", "Service", "Deployment"]
    result = dry_run(cluster, manifest)
    assert "PodSecurity" not in result.stderr, result.stderr
    spec = next(doc for doc in documents(manifest) if doc["kind"] == "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "metamapper-operator:0.1.0"
    assert container["command"] == ["metamapper-operator"]
    assert container["args"] == ["--liveness-port=8080", "--metrics-port=9090",
                                 "--poll-interval=2",
                                 f"--lease={restricted_namespace}/{lease_name(release)}",
                                 "--lease-duration=15"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}


def test_pod_security_check_catches_a_privileged_container(
        cluster: Cluster, restricted_namespace: str) -> None:
    """The check above can fail: let the container escalate privileges and the apiserver
    warns that the Deployment's pods would violate "restricted"."""
    manifest = render(cluster, unique("mmo"), restricted_namespace,
                      {"containerSecurityContext": {"allowPrivilegeEscalation": True}},
                      show_only=["templates/deployment.yaml"])
    result = dry_run(cluster, manifest)
    assert 'would violate PodSecurity "restricted:latest"' in result.stderr
    assert "allowPrivilegeEscalation != false" in result.stderr


def test_non_default_render_is_accepted_by_the_apiserver(
        chart_crds: Cluster, restricted_namespace: str, served_namespaces: list[str]) -> None:
    manifest = render(chart_crds, unique("mmo"), restricted_namespace,
                      non_default_values(served_namespaces))
    assert sorted(kinds(manifest)) == sorted([
        "ServiceAccount", "Role", "Role", "Role", "RoleBinding", "RoleBinding", "RoleBinding",
        "Service", "Deployment", "PodDisruptionBudget", "Metamapper",
        "ServiceMonitor", "NetworkPolicy", "PodMonitor", "PrometheusRule", "ConfigMap"])
    result = dry_run(chart_crds, manifest)
    assert "PodSecurity" not in result.stderr, result.stderr
    by_kind = {doc["kind"]: doc for doc in documents(manifest)}
    spec = by_kind["Deployment"]["spec"]
    assert spec["replicas"] == 3 and spec["strategy"]["type"] == "RollingUpdate"
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args == [*(f"--namespace={ns}" for ns in served_namespaces), "--liveness-port=8080",
                    "--metrics-port=9090", "--poll-interval=1",
                    f"--lease={restricted_namespace}/fleet-leader", "--lease-duration=20",
                    "--verbose"]
    assert by_kind["Metamapper"]["metadata"]["namespace"] == served_namespaces[0]
    policy = by_kind["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert policy["egress"][2] == {"ports": [{"port": 6380, "protocol": "TCP"}], "to": [
        {"podSelector": {"matchLabels": {"app": "redis"}}}]}


# --- helm install / upgrade / uninstall ------------------------------------------


def test_helm_install_upgrade_and_uninstall(
        chart_crds: Cluster, restricted_namespace: str) -> None:
    cluster, ns = chart_crds, restricted_namespace
    release = unique("mmo")
    name = f"{release}-metamapper-operator"
    selector = f"app.kubernetes.io/instance={release}"

    installed = helm(cluster, "install", release, str(CHART), "--namespace", ns, values={})
    assert "kubectl apply -n <namespace> -f examples/metamapper.yaml" in installed.stdout
    wait_until(lambda: pods_created(cluster, ns, selector, "metamapper-operator:0.1.0") == 1,
               what="the operator pod to be created in a restricted namespace")
    assert deployment(cluster, ns, name)["spec"]["strategy"]["type"] == "Recreate"
    cluster.kubectl("get", f"serviceaccount/{name}", f"service/{name}-metrics", "-n", ns)
    cluster.kubectl("get", f"clusterrole/{name}", f"clusterrolebinding/{name}")

    upgraded = helm(cluster, "upgrade", release, str(CHART), "--namespace", ns, values={
        "replicas": 2, "verbose": True, "image": {"tag": "0.1.1"},
        "metamapper": {"enabled": True, "name": "fleet", "spec": EXAMPLE_SPEC}})
    assert f"kubectl -n {ns} get metamapper fleet" in upgraded.stdout
    cluster.kubectl("get", "metamapper/fleet", "-n", ns)
    spec = deployment(cluster, ns, name)["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert f"--lease={ns}/{name}" in spec["template"]["spec"]["containers"][0]["args"]
    cluster.kubectl("get", "poddisruptionbudget", name, "-n", ns)
    granted = rules_of(json.loads(cluster.kubectl("get", "clusterrole", name, "-o",
                                                  "json").stdout))
    assert granted == OPERATOR_RULES
    lease_role = json.loads(cluster.kubectl("get", "role", f"{name}-leader-election", "-n", ns,
                                            "-o", "json").stdout)
    assert rules_of(lease_role) == LEASE_RULES
    wait_until(lambda: pods_created(cluster, ns, selector, "metamapper-operator:0.1.1") >= 1,
               what="a pod of the upgraded Deployment")

    helm(cluster, "uninstall", release, "--namespace", ns)
    wait_until(lambda: gone(cluster, f"clusterrole/{name}", f"clusterrolebinding/{name}")
               and gone(cluster, "deployment,serviceaccount,service,poddisruptionbudget,"
                        "metamapper,role,rolebinding", "-l", selector, namespace=ns),
               what="every object of the release to be deleted")
    # Helm keeps the CRDs (and so every Metamapper) on uninstall.
    cluster.kubectl("get", "crd", crd.NAME)


# --- the one-file install ----------------------------------------------------------


def test_install_yaml_is_rendered_from_the_chart_and_current(cluster: Cluster) -> None:
    result = subprocess.run([str(REPO / "hack" / "render-manifests.sh"), "--check"],
                            env={**os.environ, "HELM": str(cluster.helm_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"deploy/install.yaml is stale:\n{result.stdout}"
    manifest = INSTALL.read_text()
    assert kinds(manifest) == ["Namespace", "CustomResourceDefinition",
                               "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                               "RoleBinding", "Service", "Deployment"]
    assert (REPO / "crds" / "metamapper.io_metamappers.yaml").read_text() in manifest


def test_install_yaml_applies_reapplies_upgrades_and_deletes(cluster: Cluster) -> None:
    selector = "app.kubernetes.io/instance=metamapper-operator"
    image = "metamapper-operator:0.1.0"
    manifest = INSTALL.read_text()

    cluster.kubectl("apply", "-f", str(INSTALL))
    labels = json.loads(cluster.kubectl("get", "namespace", INSTALL_NAMESPACE,
                                        "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    wait_until(lambda: pods_created(cluster, INSTALL_NAMESPACE, selector, image) == 1,
               what="the operator pod to be created")

    again = cluster.kubectl("apply", "-f", str(INSTALL)).stdout.splitlines()
    assert again and all(line.endswith(" unchanged") for line in again), again

    upgraded = manifest.replace(f'image: "{image}"', 'image: "metamapper-operator:0.2.0"')
    assert upgraded != manifest
    applied = cluster.kubectl("apply", "-f", "-", input=upgraded).stdout
    assert "deployment.apps/metamapper-operator configured" in applied
    wait_until(lambda: pods_created(cluster, INSTALL_NAMESPACE, selector,
                                    "metamapper-operator:0.2.0") == 1,
               what="the upgraded operator pod")

    # `kubectl delete -f deploy/install.yaml` also deletes the CRDs with every Metamapper in
    # the cluster; this control plane is shared with other tests, so the CRDs stay here.
    rest = [doc for doc in documents(manifest) if doc["kind"] != "CustomResourceDefinition"]
    cluster.kubectl("delete", "--wait=false", "-f", "-", input=dump(rest))
    wait_until(lambda: gone(cluster, "namespace/" + INSTALL_NAMESPACE,
                            "clusterrole/metamapper-operator",
                            "clusterrolebinding/metamapper-operator"),
               timeout=90, what="the install to be deleted")


# --- RBAC: the chart's rules are the operator's contract ------------------------------


@pytest.mark.parametrize(("values", "clusterwide"), [
    ({}, True),
    ({"replicas": 2}, True),
    ({"watchNamespaces": ["team-a", "team-b"]}, False),
    ({"watchNamespaces": ["team-a", "team-b"], "replicas": 2}, False),
], ids=["clusterwide", "clusterwide-ha", "namespaced", "namespaced-ha"])
def test_rbac_is_exactly_the_operators_contract(
        cluster: Cluster, values: dict[str, Any], clusterwide: bool) -> None:
    manifest = render(cluster, "mmo", "ops", values, show_only=["templates/rbac.yaml"])
    assert "*" not in manifest
    roles = [doc for doc in documents(manifest) if doc["kind"] in {"ClusterRole", "Role"}]
    lease_role = roles.pop()  # the leader-election Role, in the release namespace, comes last
    assert lease_role["metadata"]["namespace"] == "ops"
    assert rules_of(lease_role) == LEASE_RULES
    assert [rule.get("resourceNames") for rule in lease_role["rules"]] == [
        None, ["mmo-metamapper-operator"]]
    if clusterwide:
        assert kinds(manifest) == ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]
    else:
        assert sorted(kinds(manifest)) == ["Role", "Role", "Role",
                                           "RoleBinding", "RoleBinding", "RoleBinding"]
        assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == OPERATOR_RULES


# --- RBAC with a real token ----------------------------------------------------------
# Removing any verb of the cluster-wide rules stalls the real operator with a 403 for it:
# tests/operator/test_rbac.py.


def grant_ids(rules: tuple[Rule, ...]) -> set[tuple[str, str]]:
    """Rules as ``kubectl auth can-i --list`` prints them: (plural.group/sub, verb)."""
    pairs: set[tuple[str, str]] = set()
    for rule in rules:
        plural, _, sub = rule.resource.partition("/")
        name = f"{plural}.{rule.group}" if rule.group else plural
        pairs.update((f"{name}/{sub}" if sub else name, verb) for verb in rule.verbs)
    return pairs


def test_token_grants_exactly_the_charts_rules(
        chart_crds: Cluster, namespace: str, tmp_path: Path) -> None:
    access = install_chart_access(chart_crds, namespace, {"replicas": 2},
                                  tmp_path / "kubeconfig")
    try:
        whoami = chart_crds.kubectl(f"--kubeconfig={access.kubeconfig}", "auth", "whoami",
                                    "-o", "json").stdout
        assert json.loads(whoami)["status"]["userInfo"]["username"] == (
            f"system:serviceaccount:{namespace}:{access.service_account}")
        # can-i --list shows rules restricted to resourceNames apart: only create here.
        assert access.granted(namespace) == grant_ids(
            (*OPERATOR_RULES, LEASE_RULES[0])) | BASELINE_GRANTS
        name = access.lease.partition("/")[2]
        for verb in ("get", "update"):
            assert access.client.allowed(verb, "coordination.k8s.io", "leases", namespace, name)
            assert not access.client.allowed(verb, "coordination.k8s.io", "leases", namespace,
                                             "another-lease")
    finally:
        uninstall_chart_access(access)


def test_namespaced_mode_runs_the_operator_in_its_namespaces_only(
        lone_cluster: Cluster, redis_url: str, tmp_path: Path) -> None:
    """The real operator with the token of a namespaced release (watchNamespaces), on a
    control plane where it is the only operator: it reconciles a Metamapper in the
    namespace it serves, and is refused anything across the cluster or elsewhere."""
    cluster = lone_cluster
    with new_namespace(cluster) as home, new_namespace(cluster) as served, \
            new_namespace(cluster) as other:
        access = install_chart_access(cluster, home, {"watchNamespaces": [served]},
                                      tmp_path / "kubeconfig")
        try:
            assert access.granted(served) == grant_ids(OPERATOR_RULES) | BASELINE_GRANTS
            assert access.granted(other) == set(BASELINE_GRANTS)

            for ns in (served, other):
                apply(cluster, ns, broker_secret(redis_url),
                      fleet(scheduler={"enabled": False}))
            operator = start_operator(access.kubeconfig, tmp_path / "operator.log",
                                      f"--namespace={served}")
            try:
                wait_for_children(cluster, served, {"mm-default", "mm-revisioner"})
                wait_until(lambda: [p.get("backlog") for p in (get(
                    cluster, served, "metamapper", "mm") or {}).get("status", {}).get(
                        "pools", [])] == [0, 0], what="both pools measured, in status")
            finally:
                operator.stop()
            log = operator.output()
            assert " 403 " not in log and "Traceback" not in log, log[-5000:]
            assert items(cluster, other, "deployments") == []

            as_operator = f"--kubeconfig={access.kubeconfig}"
            for query in ([crd.PLURAL, "--all-namespaces"], ["deployments", "-n", other],
                          [crd.PLURAL, "-n", other]):
                refused = cluster.kubectl(as_operator, "get", *query, check=False)
                assert refused.returncode != 0
                assert "Forbidden" in refused.stderr and "cannot list resource" in (
                    refused.stderr), refused.stderr
        finally:
            uninstall_chart_access(access)


def test_operator_kubeconfig_is_the_charts_service_account(
        cluster: Cluster, namespace: str, operator_kubeconfig: Path) -> None:
    """The hook for running the operator with exactly the installed operator's access."""
    client = ServiceAccountClient(operator_kubeconfig)
    as_operator = ["--kubeconfig", str(operator_kubeconfig)]
    whoami = json.loads(cluster.kubectl(*as_operator, "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"].startswith(
        f"system:serviceaccount:{namespace}:")
    cluster.kubectl(*as_operator, "get", crd.PLURAL, "--all-namespaces")
    assert client.allowed("patch", "apps", "deployments/scale", "kube-system")
    assert not client.allowed("list", "", "secrets", namespace)
    assert not client.allowed("delete", "coordination.k8s.io", "leases", namespace)
