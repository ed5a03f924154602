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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart_helpers import (
    BASELINE_GRANTS,
    CHART,
    Call,
    ChartAccess,
    Response,
    Rule,
    ServiceAccountClient,
    Targets,
    denial,
    documents,
    dump,
    expected_rules,
    helm,
    install_chart_access,
    kinds,
    operator_calls,
    render,
    rules_of,
    uninstall_chart_access,
    unique,
)
from tests.conftest import REPO, Cluster
from tests.helpers import wait_until

INSTALL = REPO / "deploy" / "install.yaml"
INSTALL_NAMESPACE = "metamapper-system"
EXAMPLE_SPEC = next(doc for doc in documents((REPO / "examples" / "metamapper.yaml").read_text())
                    if doc["kind"] == "Metamapper")["spec"]


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
        "pollIntervalSeconds": 1,
        "verbose": True,
        "image": {"repository": "registry.example.com/metamapper-operator", "tag": "0.1.0-rc1",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "15s",
                                       "labels": {"release": "prometheus"}}},
        "podDisruptionBudget": {"minAvailable": "50%"},
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
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        assert (CHART / "crds" / crd.name).read_bytes() == crd.read_bytes(), (
            f"charts/metamapper-operator/crds/{crd.name} differs from crds/{crd.name}: "
            "run `make manifests`")
        assert crd.read_text() in shown
    names = sorted(doc["metadata"]["name"] for doc in documents(shown))
    assert names == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev",
                     "metamappers.metamapper.io"]


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
    manifest = render(cluster, unique("mmo"), restricted_namespace)
    assert kinds(manifest) == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                               "Deployment"]
    result = dry_run(cluster, manifest)
    assert "PodSecurity" not in result.stderr, result.stderr
    spec = next(doc for doc in documents(manifest) if doc["kind"] == "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "metamapper-operator:0.1.0"
    assert container["command"] == ["metamapper-operator"]
    assert container["args"] == ["--liveness-port=8080", "--metrics-port=9090",
                                 "--poll-interval=5"]
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
        "ServiceAccount", "Role", "Role", "RoleBinding", "RoleBinding", "Service",
        "Deployment", "PodDisruptionBudget", "KopfPeering", "KopfPeering", "Metamapper",
        "ServiceMonitor"])
    result = dry_run(chart_crds, manifest)
    assert "PodSecurity" not in result.stderr, result.stderr
    by_kind = {doc["kind"]: doc for doc in documents(manifest)}
    spec = by_kind["Deployment"]["spec"]
    assert spec["replicas"] == 3 and spec["strategy"]["type"] == "RollingUpdate"
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args == [*(f"--namespace={ns}" for ns in served_namespaces), "--liveness-port=8080",
                    "--metrics-port=9090", "--poll-interval=1", "--peering=fleet-operator",
                    "--verbose"]
    assert by_kind["Metamapper"]["metadata"]["namespace"] == served_namespaces[0]


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
    assert f"--peering={name}" in spec["template"]["spec"]["containers"][0]["args"]
    cluster.kubectl("get", "poddisruptionbudget", name, "-n", ns)
    cluster.kubectl("get", "clusterkopfpeering", name)
    granted = rules_of(json.loads(cluster.kubectl("get", "clusterrole", name, "-o",
                                                  "json").stdout))
    assert granted == expected_rules(clusterwide=True, peered=True)
    wait_until(lambda: pods_created(cluster, ns, selector, "metamapper-operator:0.1.1") >= 1,
               what="a pod of the upgraded Deployment")

    helm(cluster, "uninstall", release, "--namespace", ns)
    wait_until(lambda: gone(cluster, f"clusterrole/{name}", f"clusterrolebinding/{name}",
                            f"clusterkopfpeering/{name}")
               and gone(cluster, "deployment,serviceaccount,service,poddisruptionbudget,metamapper",
                        "-l", selector, namespace=ns),
               what="every object of the release to be deleted")
    # Helm keeps the CRDs (and so every Metamapper) on uninstall.
    cluster.kubectl("get", "crd", "metamappers.metamapper.io")


# --- the one-file install ----------------------------------------------------------


def test_install_yaml_is_rendered_from_the_chart_and_current(cluster: Cluster) -> None:
    result = subprocess.run([str(REPO / "hack" / "render-manifests.sh"), "--check"],
                            env={**os.environ, "HELM": str(cluster.helm_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"deploy/install.yaml is stale:\n{result.stdout}"
    manifest = INSTALL.read_text()
    assert kinds(manifest) == ["Namespace", "CustomResourceDefinition",
                               "CustomResourceDefinition", "CustomResourceDefinition",
                               "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                               "Deployment"]
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


@pytest.mark.parametrize(("values", "clusterwide", "peered"), [
    ({}, True, False),
    ({"replicas": 2}, True, True),
    ({"watchNamespaces": ["team-a", "team-b"]}, False, False),
    ({"watchNamespaces": ["team-a", "team-b"], "replicas": 2}, False, True),
], ids=["clusterwide", "clusterwide-ha", "namespaced", "namespaced-ha"])
def test_rbac_is_exactly_the_operators_contract(
        cluster: Cluster, values: dict[str, Any], clusterwide: bool, peered: bool) -> None:
    manifest = render(cluster, "mmo", "ops", values, show_only=["templates/rbac.yaml"])
    assert "*" not in manifest
    roles = [doc for doc in documents(manifest) if doc["kind"] in {"ClusterRole", "Role"}]
    if clusterwide:
        assert kinds(manifest) == ["ClusterRole", "ClusterRoleBinding"]
    else:
        assert sorted(kinds(manifest)) == ["Role", "Role", "RoleBinding", "RoleBinding"]
        assert sorted(role["metadata"]["namespace"] for role in roles) == ["team-a", "team-b"]
    for role in roles:
        assert rules_of(role) == expected_rules(clusterwide=clusterwide, peered=peered)


# --- RBAC proven with a real token: every request allowed, any rule removed denies -----


Outcomes = dict[Rule, list[tuple[Call, Response]]]


@dataclass
class Lab:
    """The chart's RBAC for one release, the objects the operator acts on, and its rules."""

    access: ChartAccess
    targets: Targets
    rules: tuple[Rule, ...]

    def outcomes(self, targets: Targets | None = None) -> Outcomes:
        """Every request the operator makes, per rule, with the apiserver's responses."""
        targets = targets or self.targets
        client = self.access.client
        return {rule: [(call, client.request(call.method, call.path, call.body,
                                             call.content_type))
                       for call in operator_calls(rule, targets)]
                for rule in self.rules}


def seed(cluster: Cluster, namespace: str) -> dict[str, str]:
    """As the admin: the objects an operator finds in a namespace it serves."""
    cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples" / "metamapper.yaml"))
    cluster.kubectl("create", "deployment", "metamapper-default", "-n", namespace,
                    "--image=worker:1", "--replicas=0")
    wait_until(lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", namespace,
                                       check=False).returncode == 0,
               what="the namespace's default ServiceAccount")
    cluster.kubectl("run", "worker", "-n", namespace, "--image=worker:1", "--restart=Never")
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "probe"},
        "involvedObject": {"apiVersion": "metamapper.io/v1alpha1", "kind": "Metamapper",
                           "name": "metamapper", "namespace": namespace},
        "reason": "Created", "message": "probe", "type": "Normal"}))
    return {"metamapper": "metamapper", "deployment": "metamapper-default",
            "secret": "metamapper-broker", "pod": "worker", "event": "probe"}


def peering_name(access: ChartAccess) -> str | None:
    peerings = [doc for doc in documents(access.manifest)
                if doc["kind"] in {"ClusterKopfPeering", "KopfPeering"}]
    return peerings[0]["metadata"]["name"] if peerings else None


@pytest.fixture(scope="module")
def clusterwide_lab(chart_crds: Cluster, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Lab]:
    """Cluster-wide HA mode: every rule the chart can grant, peering included."""
    with new_namespace(chart_crds) as ns:
        values = {"replicas": 2}
        access = install_chart_access(chart_crds, ns, values,
                                      tmp_path_factory.mktemp("rbac") / "kubeconfig")
        targets = Targets(namespace=ns, clusterwide=True, peering=peering_name(access),
                          **seed(chart_crds, ns))
        yield Lab(access, targets, expected_rules(clusterwide=True, peered=True))
        uninstall_chart_access(access)


def grant_ids(rules: tuple[Rule, ...]) -> set[tuple[str, str]]:
    """Rules as ``kubectl auth can-i --list`` prints them: (plural.group/sub, verb)."""
    pairs: set[tuple[str, str]] = set()
    for rule in rules:
        plural, _, sub = rule.resource.partition("/")
        name = f"{plural}.{rule.group}" if rule.group else plural
        pairs.update((f"{name}/{sub}" if sub else name, verb) for verb in rule.verbs)
    return pairs


def failures(outcomes: Outcomes, *, denied: Rule | None = None
             ) -> list[str]:
    """What went wrong: a request of ``denied`` not refused by RBAC, any other not 2xx."""
    found = []
    for rule, results in outcomes.items():
        for call, response in results:
            if rule == denied:
                problem = denial(response, call, rule)
                if problem:
                    found.append(f"expected 403 for {rule.id} {call.verb}: {problem}")
            elif not 200 <= response.status < 300:
                found.append(f"{rule.id} {call.verb} {call.method} {call.path}: "
                             f"{response.status} {response.text[:300]}")
    return found


def test_token_grants_exactly_the_charts_rules(clusterwide_lab: Lab) -> None:
    access = clusterwide_lab.access
    whoami = access.cluster.kubectl(f"--kubeconfig={access.kubeconfig}", "auth", "whoami",
                                    "-o", "json").stdout
    assert json.loads(whoami)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{access.namespace}:{access.service_account}")
    assert access.granted(access.namespace) == grant_ids(clusterwide_lab.rules) | BASELINE_GRANTS


def test_every_request_the_operator_makes_is_allowed(clusterwide_lab: Lab) -> None:
    outcomes = clusterwide_lab.outcomes()
    assert sum(len(results) for results in outcomes.values()) == sum(
        len(rule.verbs) for rule in clusterwide_lab.rules)
    assert failures(outcomes) == []


@contextlib.contextmanager
def changed_rule(lab: Lab, rule: Rule, replacement: Rule | None,
                 revoked: tuple[str, str, str, str]) -> Iterator[None]:
    """The lab's ClusterRole with ``rule`` replaced (or removed when None) for the block;
    ``revoked`` (verb, group, resource, namespace) tells when the change has taken effect."""
    access = lab.access
    (role,) = access.roles()
    rules = []
    for entry in role["rules"]:
        if rules_of({"rules": [entry]}) != (rule,):
            rules.append(entry)
        elif replacement:
            rules.append(replacement.as_manifest())
    assert len(rules) == len(role["rules"]) - (replacement is None)
    access.apply_roles([{**role, "rules": rules}])
    try:
        wait_until(lambda: not access.client.allowed(*revoked), what=f"{revoked} to be revoked")
        yield
    finally:
        access.apply_roles([role])
        wait_until(lambda: access.client.allowed(*revoked), what=f"{revoked} to be granted")


@pytest.mark.parametrize("rule", expected_rules(clusterwide=True, peered=True),
                         ids=lambda rule: rule.id)
def test_removing_any_rule_denies_exactly_its_requests(clusterwide_lab: Lab, rule: Rule) -> None:
    revoked = (rule.verbs[0], rule.group, rule.resource, clusterwide_lab.targets.namespace)
    with changed_rule(clusterwide_lab, rule, None, revoked):
        assert failures(clusterwide_lab.outcomes(), denied=rule) == []


@pytest.mark.parametrize("resource", ["deployments", "configmaps"])
def test_server_side_apply_needs_create_for_a_new_object_only(
        clusterwide_lab: Lab, resource: str) -> None:
    """Why ``create`` is granted next to ``patch``: the operator server-side applies its
    objects (a PATCH), and the apiserver also checks ``create`` when the object is new."""
    rule = next(rule for rule in clusterwide_lab.rules if rule.resource == resource)
    client, targets = clusterwide_lab.access.client, clusterwide_lab.targets
    existing = operator_calls(rule, targets)[0]
    new = operator_calls(rule, targets)[0]
    assert existing.verb == new.verb == "create" and existing.path != new.path
    assert client.request(existing.method, existing.path, existing.body,
                          existing.content_type).status == 201
    without_create = Rule(rule.group, rule.resource,
                          tuple(verb for verb in rule.verbs if verb != "create"))
    with changed_rule(clusterwide_lab, rule, without_create,
                      ("create", rule.group, rule.resource, targets.namespace)):
        again = client.request(existing.method, existing.path, existing.body,
                               existing.content_type)
        assert again.status == 200, again.text
        refused = client.request(new.method, new.path, new.body, new.content_type)
        assert denial(refused, replace(new, checked_first=None), rule) is None


def test_namespaced_mode_grants_nothing_outside_the_served_namespaces(
        chart_crds: Cluster, namespace: str, served_namespaces: list[str],
        tmp_path: Path) -> None:
    served = served_namespaces[0]
    access = install_chart_access(chart_crds, namespace,
                                  {"watchNamespaces": served_namespaces, "replicas": 2},
                                  tmp_path / "kubeconfig")
    try:
        rules = expected_rules(clusterwide=False, peered=True)
        targets = Targets(namespace=served, clusterwide=False, peering=peering_name(access),
                          **seed(chart_crds, served))
        lab = Lab(access, targets, rules)
        assert access.granted(served) == grant_ids(rules) | BASELINE_GRANTS
        assert access.granted(namespace) == set(BASELINE_GRANTS)
        assert failures(lab.outcomes()) == []
        # Every request in a namespace the release does not serve (its own): 403.
        for rule, results in lab.outcomes(replace(targets, namespace=namespace)).items():
            assert [denial(response, call, rule) for call, response in results] == [None] * len(
                results), rule.id
        # Lists and watches across the cluster: 403.
        cluster_scope = replace(targets, clusterwide=True)
        for rule in rules:
            for call in operator_calls(rule, cluster_scope):
                if call.verb in {"list", "watch"}:
                    response = access.client.request(call.method, call.path)
                    assert denial(response, call, rule) is None, rule.id
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
    cluster.kubectl(*as_operator, "get", "metamappers", "--all-namespaces")
    assert client.allowed("patch", "apps", "deployments/scale", "kube-system")
    assert not client.allowed("list", "", "secrets", namespace)
    assert not client.allowed("create", "kopf.dev", "clusterkopfpeerings", None)
