"""A small valid Metamapper body shared by the core's unit tests."""

from __future__ import annotations

import copy
from typing import Any

from metamapper_operator.status import DeploymentState

BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "mm", "uid": "u-1", "generation": 3},
    "spec": {
        "image": "worker:1",
        "broker": {"url": "redis://redis:6379/0", "redis": {"globalKeyPrefix": "mm:"}},
        "celery": {"settings": {"task_soft_time_limit": 60}},
        "pools": [{"name": "default", "queues": ["default", "checks"], "concurrency": 2,
                   "minReplicas": 1, "maxReplicas": 5}],
    },
}


def body(**spec: Any) -> dict[str, Any]:
    """``BODY`` with the top-level spec fields ``spec`` replaced."""
    changed = copy.deepcopy(BODY)
    changed["spec"].update(spec)
    return changed


def settled(name: str, replicas: int = 1) -> DeploymentState:
    """A Deployment of ``replicas`` pods, all of them ready and up to date."""
    return DeploymentState(name=name, spec_hash="h", replicas=replicas, ready=replicas,
                           updated=replicas, generation=1, observed_generation=1)


def put(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``value`` at the dotted ``path`` of ``raw`` (numbers index lists), making the
    objects on the way."""
    *parents, last = path.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
