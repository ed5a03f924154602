"""The Helm chart under test, and the operator's API access as the chart grants it.

``operator_kubeconfig`` is the hook for running the operator as it runs in a cluster: a
kubeconfig authenticated with a real token of the chart's ServiceAccount, bound by the
chart's own RBAC (default values: cluster-wide, standalone). Any test can ask for it once
``tests.chart_helpers`` is loaded as a plugin (``pytest_plugins`` in tests/conftest.py).

``OPERATOR_RULES`` is the operator's API contract; ``operator_calls`` turns each of its
verbs into the request the operator makes for it, so tests can show that every rule is
granted and that removing any one of them denies exactly its requests with 403.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    """One RBAC rule: one API group, one resource (or subresource), its verbs."""

    group: str
    resource: str
    verbs: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.resource}.{self.group or 'core'}"

    def as_manifest(self) -> dict[str, list[str]]:
        return {"apiGroups": [self.group], "resources": [self.resource],
                "verbs": list(self.verbs)}


OPERATOR_RULES: tuple[Rule, ...] = (
    Rule("metamapper.io", "metamappers", ("list", "watch", "patch")),
    Rule("metamapper.io", "metamappers/status", ("patch",)),
    Rule("apps", "deployments", ("list", "watch", "create", "patch", "delete")),
    Rule("apps", "deployments/scale", ("patch",)),
    Rule("", "configmaps", ("list", "watch", "create", "patch")),
    Rule("", "secrets", ("get",)),
    Rule("", "pods", ("list", "patch")),
    Rule("", "events", ("create",)),
)
PEERING_VERBS = ("get", "list", "watch", "patch")
CLUSTER_PEERING_RULE = Rule("kopf.dev", "clusterkopfpeerings", PEERING_VERBS)
NAMESPACED_PEERING_RULE = Rule("kopf.dev", "kopfpeerings", PEERING_VERBS)


def expected_rules(*, clusterwide: bool, peered: bool) -> tuple[Rule, ...]:
    """The rules the chart must grant in a mode: the contract, plus peering when peered."""
    if not peered:
        return OPERATOR_RULES
    return (*OPERATOR_RULES, CLUSTER_PEERING_RULE if clusterwide else NAMESPACED_PEERING_RULE)


def rules_of(role: Mapping[str, Any]) -> tuple[Rule, ...]:
    """A rendered (Cluster)Role's rules, one per group and resource as the chart writes them."""
    found = []
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        (group,), (resource,) = rule["apiGroups"], rule["resources"]
        found.append(Rule(group, resource, tuple(rule["verbs"])))
    return tuple(found)


# --- helm and rendering ------------------------------------------------------------


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
"""  # noqa: E501


@pytest.fixture(scope="session")
def chart_crds(cluster: Cluster) -> Cluster:
    """The cluster with every CRD of the chart's crds/ folder, and a ServiceMonitor CRD."""
    shown = helm(cluster, "show", "crds", str(CHART)).stdout
    cluster.kubectl("apply", "--server-side", "-f", "-", input=shown + "\n---\n"
                    + SERVICE_MONITOR_CRD)
    for doc in documents(shown + "\n---\n" + SERVICE_MONITOR_CRD):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                        f"crd/{doc['metadata']['name']}")
    return cluster


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

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                content_type: str = "application/json") -> Response:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.server + path, data=data, method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as rsp:
                return Response(rsp.status, rsp.read().decode())
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read().decode())

    def allowed(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        """The apiserver's answer for this token (a SelfSubjectAccessReview)."""
        plural, _, sub = resource.partition("/")
        attributes = {"verb": verb, "group": group, "resource": plural, "subresource": sub}
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
    """Apply the chart's ServiceAccount and RBAC templates (and peering objects, when
    peered) for a release in ``namespace``, and write a kubeconfig for the ServiceAccount."""
    release = release or unique("rbac")
    templates = list(RBAC_TEMPLATES)
    if int(values.get("replicas", 1)) > 1:
        templates.append("templates/peering.yaml")
    manifest = render(cluster, release, namespace, values, show_only=templates)
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


# --- the operator's requests, one or more per RBAC verb ---------------------------

VERSIONS = {"metamapper.io": "v1alpha1", "apps": "v1", "": "v1", "events.k8s.io": "v1",
            "kopf.dev": "v1"}
VERB_ORDER = ("create", "get", "list", "watch", "patch", "delete")
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
FIELD_MANAGER = "metamapper-operator"


@dataclass(frozen=True)
class Call:
    """One API request the operator makes, and the RBAC verb it needs.

    ``checked_first`` is the verb RBAC checks before ``verb``, when another: a server-side
    apply is a PATCH (``patch``) that needs ``create`` too when the object is new."""

    verb: str
    method: str
    path: str
    body: Mapping[str, Any] | None = None
    content_type: str = "application/json"
    checked_first: str | None = None


@dataclass(frozen=True)
class Targets:
    """Objects the requests act on: existing ones (made by the admin), or new ones."""

    namespace: str
    clusterwide: bool
    metamapper: str
    deployment: str
    secret: str
    pod: str
    event: str
    peering: str | None


def _collection(rule: Rule, namespace: str | None) -> str:
    group = rule.group
    base = f"/apis/{group}/{VERSIONS[group]}" if group else "/api/v1"
    plural = rule.resource.partition("/")[0]
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_object(rule: Rule, targets: Targets, name: str) -> dict[str, Any]:
    """The body the operator sends to create an object of ``rule``'s resource."""
    meta = {"name": name, "namespace": targets.namespace}
    regarding = {"apiVersion": "metamapper.io/v1alpha1", "kind": "Metamapper",
                 "name": targets.metamapper, "namespace": targets.namespace}
    if rule.resource == "deployments":
        labels = {"app.kubernetes.io/name": name}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 0, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}}}}
    if rule.resource == "configmaps":
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                "data": {"settings.json": "{}"}}
    if rule.group == "events.k8s.io":
        return {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": meta,
                "eventTime": _now(), "reportingController": "metamapper.io/operator",
                "reportingInstance": "rbac-probe", "action": "Scale", "reason": "Scaled",
                "type": "Normal", "note": "probe", "regarding": regarding}
    return {"apiVersion": "v1", "kind": "Event", "metadata": meta, "involvedObject": regarding,
            "reason": "Scaled", "message": "probe", "type": "Normal",
            "source": {"component": "metamapper-operator"}, "firstTimestamp": _now()[:19] + "Z"}


def operator_calls(rule: Rule, targets: Targets) -> list[Call]:
    """The requests the operator makes for every verb of ``rule``, in an order that works:
    an object the operator creates (server-side apply, or POST for events) is then read,
    patched and deleted."""
    scoped = rule.resource != "clusterkopfpeerings"
    own_namespace = targets.namespace if scoped else None
    # Lists and watches span the cluster in cluster-wide mode, as kopf's do.
    list_namespace = None if targets.clusterwide else own_namespace
    collection = _collection(rule, own_namespace)
    plural, _, sub = rule.resource.partition("/")
    new = unique("probe")
    existing = {
        "metamappers": targets.metamapper, "deployments": targets.deployment,
        "secrets": targets.secret, "pods": targets.pod, "events": targets.event,
        "kopfpeerings": targets.peering, "clusterkopfpeerings": targets.peering,
    }
    creates = "create" in rule.verbs and rule.resource != "events"
    target = new if creates else existing[plural]
    item = f"{collection}/{target}" + (f"/{sub}" if sub else "")
    patches = {
        "status": {"status": {"observedGeneration": 1}},
        "scale": {"spec": {"replicas": 0}},
        "": ({"status": {"rbac-probe": {"priority": 0, "lastseen": _now(), "lifetime": 60}}}
             if plural.endswith("kopfpeerings")
             else {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost":
                                                "-1"}}}),
    }
    by_verb = {
        "create": (Call("create", "PATCH",
                        f"{collection}/{new}?fieldManager={FIELD_MANAGER}&force=true",
                        _new_object(rule, targets, new), APPLY, checked_first="patch")
                   if creates else
                   Call("create", "POST", collection, _new_object(rule, targets, new))),
        "get": Call("get", "GET", item),
        "list": Call("list", "GET", _collection(rule, list_namespace)),
        "watch": Call("watch", "GET",
                      f"{_collection(rule, list_namespace)}?watch=1&timeoutSeconds=1"),
        "patch": Call("patch", "PATCH", item, patches[sub], MERGE),
        "delete": Call("delete", "DELETE", item),
    }
    return [by_verb[verb] for verb in VERB_ORDER if verb in rule.verbs]


def denial(response: Response, call: Call, rule: Rule) -> str | None:
    """None when ``response`` is RBAC's 403 for this call, otherwise what it was instead."""
    expected = f'cannot {call.checked_first or call.verb} resource "{rule.resource}"'
    if response.status == 403 and expected in response.json().get("message", ""):
        return None
    return f"{call.method} {call.path}: {response.status} {response.text[:300]}"
