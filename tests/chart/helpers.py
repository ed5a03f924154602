"""The Helm chart under test, and the operator's API access as the chart grants it.

``operator_kubeconfig`` is the hook for running the operator as it runs in a cluster: a
kubeconfig authenticated with a real token of the chart's ServiceAccount, bound by the
chart's own RBAC (default values: cluster-wide, standalone). Any test can ask for it once
``tests.chart.helpers`` is loaded as a plugin (``pytest_plugins`` in tests/conftest.py).

``OPERATOR_RULES`` is the operator's API contract, which the chart must grant exactly;
tests/operator/test_rbac.py shows that the operator needs every verb of it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.controlplane import ControlPlane, install_crds, tool_dirs
from metamapper_operator import crd
from tests.conftest import REPO, Cluster

CHART = REPO / "charts" / "metamapper-operator"
RBAC_TEMPLATES = ("templates/serviceaccount.yaml", "templates/rbac.yaml")
# Granted to every authenticated user by the default ClusterRoles (system:basic-user ...).
BASELINE_GRANTS = frozenset({
    ("selfsubjectaccessreviews.authorization.k8s.io", "create"),
    ("selfsubjectrulesreviews.authorization.k8s.io", "create"),
    ("selfsubjectreviews.authentication.k8s.io", "create"),
})


@dataclass(frozen=True)
class Rule:
    """One RBAC rule: one API group, one resource (or subresource), its verbs; ``named``
    when it is restricted to the object(s) its resourceNames list."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    named: bool = False

    @property
    def id(self) -> str:
        return f"{self.resource}.{self.group or 'core'}{'-named' if self.named else ''}"


OPERATOR_RULES: tuple[Rule, ...] = (
    Rule(crd.GROUP, crd.PLURAL, ("get", "list", "watch", "patch")),
    Rule(crd.GROUP, f"{crd.PLURAL}/status", ("patch",)),
    Rule("apps", "deployments", ("list", "watch", "create", "patch", "delete")),
    Rule("apps", "deployments/scale", ("patch",)),
    Rule("", "configmaps", ("list", "watch", "create", "patch")),
    Rule("", "secrets", ("get",)),
    Rule("policy", "poddisruptionbudgets", ("list", "watch", "create", "patch", "delete")),
    Rule("networking.k8s.io", "networkpolicies", ("list", "watch", "create", "patch", "delete")),
    Rule("", "pods", ("list", "watch", "patch")),
    Rule("", "services", ("list", "watch", "create", "patch", "delete")),
    Rule("", "events", ("create", "patch")),
)
# Leader election, in the Role of the release namespace: create cannot be restricted by
# name in RBAC; reading and renewing are, to the one Lease.
LEASE_RULES: tuple[Rule, ...] = (
    Rule("coordination.k8s.io", "leases", ("create",)),
    Rule("coordination.k8s.io", "leases", ("get", "update"), named=True),
)


def lease_name(release: str) -> str:
    """The chart's Lease (and object name prefix) for ``release`` with default values."""
    name = "metamapper-operator"
    return release if name in release else f"{release}-{name}"


def rules_of(role: Mapping[str, Any]) -> tuple[Rule, ...]:
    """A rendered (Cluster)Role's rules, one per group and resource as the chart writes them."""
    found = []
    for rule in role["rules"]:
        assert set(rule) - {"resourceNames"} == {"apiGroups", "resources", "verbs"}, rule
        (group,), (resource,) = rule["apiGroups"], rule["resources"]
        found.append(Rule(group, resource, tuple(rule["verbs"]), "resourceNames" in rule))
    return tuple(found)


# --- helm and rendering ------------------------------------------------------------


@functools.cache
def default_helm() -> Path:
    """The helm binary tools/build.sh builds (no control plane needed)."""
    _, helm_dir = tool_dirs()
    return helm_dir / "helm"


def default_rules() -> tuple[Rule, ...]:
    """The rules of every (Cluster)Role the chart renders with default values. Needs no
    control plane (only helm), so tests can be parametrized from it when they are
    collected."""
    manifest = subprocess.run(
        [str(default_helm()), "template", "rules", str(CHART),
         "--show-only", "templates/rbac.yaml"],
        text=True, capture_output=True, timeout=60, check=True).stdout
    return tuple(rule for doc in documents(manifest) if doc["kind"] in {"ClusterRole", "Role"}
                 for rule in rules_of(doc))


def helm(cluster: Cluster, *args: str, values: Mapping[str, Any] | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real helm against the local control plane; ``values`` go in on stdin."""
    argv = [str(cluster.helm_path), *args, f"--kubeconfig={cluster.kubeconfig}"]
    if values is not None:
        argv += ["--values", "-"]
    result = subprocess.run(argv, input=None if values is None else yaml.safe_dump(dict(values)),
                            text=True, capture_output=True, timeout=180)
    if check and result.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def render(cluster: Cluster, release: str, namespace: str,
           values: Mapping[str, Any] | None = None, show_only: Sequence[str] = ()) -> str:
    """``helm template`` of the chart: the manifest text."""
    only = [arg for template in show_only for arg in ("--show-only", template)]
    return helm(cluster, "template", release, str(CHART), "--namespace", namespace, *only,
                values=values or {}).stdout


def documents(manifest: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(manifest) if doc]


def kinds(manifest: str) -> list[str]:
    return [doc["kind"] for doc in documents(manifest)]


def dump(docs: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- CRDs the rendered objects need ------------------------------------------------

# The fields of prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1) the chart
# writes, with their published types. Unknown fields are rejected (kubectl's strict field
# validation), so a misspelt or misplaced field in the chart's ServiceMonitor fails.
SERVICE_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors,
          singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: &duration {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: *duration
                      honorLabels: {type: boolean}
"""  # noqa: E501

# prometheus-operator's PodMonitor (monitoring.coreos.com/v1), likewise: the fields the
# chart writes, with their published types.
POD_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: podmonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PodMonitor, listKind: PodMonitorList, plural: podmonitors,
          singular: podmonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                podMetricsEndpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: &duration {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: *duration
                      relabelings:
                        type: array
                        items:
                          type: object
                          properties:
                            sourceLabels: {type: array, items: {type: string, pattern: '^[a-zA-Z_][a-zA-Z0-9_]*$'}}
                            targetLabel: {type: string}
"""  # noqa: E501

# prometheus-operator's PrometheusRule (monitoring.coreos.com/v1), likewise.
PROMETHEUS_RULE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules,
          singular: prometheusrule}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    properties:
                      name: {type: string, minLength: 1}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          properties:
                            alert: {type: string}
                            record: {type: string}
                            expr: {x-kubernetes-int-or-string: true}
                            for: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
"""  # noqa: E501
STAND_IN_CRDS = SERVICE_MONITOR_CRD + "\n---\n" + POD_MONITOR_CRD + "\n---\n" + PROMETHEUS_RULE_CRD


@pytest.fixture(scope="session")
def chart_crds(cluster: Cluster) -> Cluster:
    """The cluster with every CRD of the chart's crds/ folder, and the stand-in CRDs of
    prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule."""
    shown = helm(cluster, "show", "crds", str(CHART)).stdout
    cluster.kubectl("apply", "--server-side", "-f", "-", input=shown + "\n---\n"
                    + STAND_IN_CRDS)
    for doc in documents(shown + "\n---\n" + STAND_IN_CRDS):
        cluster.wait_established(doc["metadata"]["name"])
    return cluster


@contextmanager
def lone_control_plane(root: Path) -> Iterator[Cluster]:
    """A control plane of its own under ``root`` with the project's CRDs, stopped on exit."""
    kube, helm_dir = tool_dirs()
    plane = ControlPlane(root)
    plane.start()
    try:
        lone = Cluster(plane, kube / "kubectl", helm_dir / "helm")
        install_crds(plane, kube / "kubectl")
        yield lone
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def lone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of its own, for a test that runs an operator over every namespace:
    on the shared ``cluster`` the operator tests' session operator watches every namespace
    too, and would act on the same objects."""
    with lone_control_plane(tmp_path_factory.mktemp("lone-cluster")) as lone:
        yield lone


# --- acting as the chart's ServiceAccount ------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    text: str

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.text))


@dataclass
class ServiceAccountClient:
    """Raw API requests authenticated by the token in a kubeconfig (and nothing else)."""

    kubeconfig: Path
    server: str = field(init=False)
    token: str = field(init=False)
    context: ssl.SSLContext = field(init=False, repr=False)

    def __post_init__(self) -> None:
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.token = config["users"][0]["user"]["token"]
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        self.context = ssl.create_default_context(cadata=ca)

    def request(self, method: str, path: str, body: Mapping[str, Any]) -> Response:
        request = urllib.request.Request(
            self.server + path, data=json.dumps(body).encode(), method=method,
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as rsp:
                return Response(rsp.status, rsp.read().decode())
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read().decode())

    def allowed(self, verb: str, group: str, resource: str, namespace: str | None,
                name: str = "") -> bool:
        """The apiserver's answer for this token (a SelfSubjectAccessReview)."""
        plural, _, sub = resource.partition("/")
        attributes = {"verb": verb, "group": group, "resource": plural, "subresource": sub,
                      "name": name}
        if namespace:
            attributes["namespace"] = namespace
        review = self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                              {"apiVersion": "authorization.k8s.io/v1",
                               "kind": "SelfSubjectAccessReview",
                               "spec": {"resourceAttributes": attributes}})
        assert review.status == 201, review.text
        return bool(review.json()["status"].get("allowed"))


def service_account_kubeconfig(cluster: Cluster, namespace: str, service_account: str,
                               path: Path) -> Path:
    """A kubeconfig for ``service_account``: a real token, the admin kubeconfig's server+CA."""
    token = cluster.kubectl("create", "token", service_account, "-n", namespace,
                            "--duration=2h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    user = f"system:serviceaccount:{namespace}:{service_account}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "operator",
        "clusters": admin["clusters"],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {
            "cluster": admin["clusters"][0]["name"], "user": user, "namespace": namespace}}],
    }))
    path.chmod(0o600)
    return path


@dataclass
class ChartAccess:
    """The chart's ServiceAccount and RBAC installed for one release, and a kubeconfig."""

    cluster: Cluster
    release: str
    namespace: str
    values: Mapping[str, Any]
    kubeconfig: Path
    manifest: str

    @property
    def service_account(self) -> str:
        return next(doc["metadata"]["name"] for doc in documents(self.manifest)
                    if doc["kind"] == "ServiceAccount")

    @functools.cached_property
    def client(self) -> ServiceAccountClient:
        return ServiceAccountClient(self.kubeconfig)

    def roles(self) -> list[dict[str, Any]]:
        return [doc for doc in documents(self.manifest) if doc["kind"] in {"ClusterRole", "Role"}]

    @property
    def lease(self) -> str:
        """``namespace/name`` of the leader-election Lease the chart grants access to."""
        for role in self.roles():
            for rule in role["rules"]:
                if rule["resources"] == ["leases"] and rule.get("resourceNames"):
                    return f"{self.namespace}/{rule['resourceNames'][0]}"
        raise AssertionError("the chart grants no named Lease")

    def apply_roles(self, roles: Sequence[Mapping[str, Any]]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=dump(roles))

    def granted(self, namespace: str) -> set[tuple[str, str]]:
        """``kubectl auth can-i --list`` as the ServiceAccount: (resource.group, verb) pairs."""
        listing = self.cluster.kubectl(f"--kubeconfig={self.kubeconfig}", "auth", "can-i",
                                       "--list", "-n", namespace).stdout
        row = re.compile(r"^(\S+)\s+\[(.*?)\]\s+\[(.*?)\]\s+\[(.*?)\]\s*$")
        pairs: set[tuple[str, str]] = set()
        for line in listing.splitlines()[1:]:
            match = row.match(line)
            if match and not match[3]:  # a resource row without resourceNames
                pairs.update((match[1], verb) for verb in match[4].split())
        return pairs


def install_chart_access(cluster: Cluster, namespace: str, values: Mapping[str, Any],
                         kubeconfig: Path, release: str | None = None) -> ChartAccess:
    """Apply the chart's ServiceAccount and RBAC templates for a release in ``namespace``,
    and write a kubeconfig for the ServiceAccount."""
    release = release or unique("rbac")
    manifest = render(cluster, release, namespace, values, show_only=RBAC_TEMPLATES)
    cluster.kubectl("apply", "-f", "-", input=manifest)
    access = ChartAccess(cluster, release, namespace, values, kubeconfig, manifest)
    service_account_kubeconfig(cluster, namespace, access.service_account, kubeconfig)
    return access


def uninstall_chart_access(access: ChartAccess) -> None:
    access.cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                           input=access.manifest)


@pytest.fixture
def operator_kubeconfig(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a real token), bound
    by the chart's RBAC with default values (cluster-wide, standalone), in ``namespace``.
    Run the operator with it to exercise exactly the access an installed operator has."""
    access = install_chart_access(cluster, namespace, {}, tmp_path / "operator-kubeconfig")
    yield access.kubeconfig
    uninstall_chart_access(access)
