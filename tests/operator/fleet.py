"""Building Metamapper objects and reading their children, for the operator tests."""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from devenv.waiting import wait_until
from metamapper_operator import crd
from tests.conftest import Cluster

BROKER_SECRET = "broker"
BROKER_PASSWORD = "s3cret-pw"  # must never show outside the Secret


def fleet(name: str = "mm", **spec: Any) -> dict[str, Any]:
    """A valid Metamapper with two pools; keyword arguments replace spec fields."""
    body: dict[str, Any] = {
        "apiVersion": crd.API_VERSION, "kind": crd.KIND,
        "metadata": {"name": name},
        "spec": {
            "image": "metamapper-worker:0.1.0",
            "broker": {"urlSecretRef": {"name": BROKER_SECRET}},
            "pools": [
                {"name": "default", "queues": ["default", "checks"], "concurrency": 3,
                 "minReplicas": 1, "maxReplicas": 4},
                {"name": "revisioner", "queues": ["revisioner"], "concurrency": 2,
                 "minReplicas": 0, "maxReplicas": 3, "terminationGracePeriodSeconds": 900},
            ],
        },
    }
    body["spec"].update(copy.deepcopy(spec))
    return body


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump_all(list(objects)))


def broker_secret(url: str = f"redis://:{BROKER_PASSWORD}@redis.example:6379/0",
                  name: str = BROKER_SECRET) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"url": url}}


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def items(cluster: Cluster, namespace: str, kind: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "-n", namespace, kind, "-o", "json").stdout
    return list(json.loads(out)["items"])


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_for_children(cluster: Cluster, namespace: str, names: set[str],
                      timeout: float = 30) -> dict[str, dict[str, Any]]:
    """Wait until exactly ``names`` Deployments exist; return them by name."""
    def found() -> tuple[dict[str, dict[str, Any]]] | None:
        deps = {d["metadata"]["name"]: d for d in items(cluster, namespace, "deployments")}
        return (deps,) if set(deps) == names else None

    return wait_until(found, timeout=timeout, what=f"Deployments {sorted(names)}")[0]
