"""Removing a default Celery setting through the apiserver: which ways of writing a
Metamapper keep a ``null`` in ``celery.settings``, and the ``$remove`` marker that every
way keeps, down to the settings the worker loads from the rendered ConfigMap."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devenv.waiting import wait_until
from metamapper.settings import from_environment
from metamapper_beat import REMOVE
from tests.conftest import Cluster
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply, broker_secret, fleet, get

HEARTBEAT = "beat-scheduler-healthcheck"
KEPT = {"task": "app.checks.tasks.scheduler.create_executions", "schedule": 300}
#: One way of writing a Metamapper (the object) into a namespace.
Write = Callable[[Cluster, str, dict[str, Any]], None]


def _settings(removed: Any) -> dict[str, Any]:
    """Settings removing the heartbeat entry and the soft time limit with ``removed``."""
    return {"beat_schedule": {HEARTBEAT: removed, "mine": KEPT},
            "task_soft_time_limit": removed}


def _stored(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get(cluster, namespace, "metamapper", name)
    assert obj is not None
    return dict(obj["spec"]["celery"]["settings"])


def _create(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(body))


def _server_side_apply(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                    input=yaml.safe_dump(body))


def _replace(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
    live = get(cluster, namespace, "metamapper", body["metadata"]["name"])
    assert live is not None
    live["spec"] = body["spec"]
    cluster.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(live))


def _helm(server_side: str) -> Write:
    """A chart whose one template is the object, installed or upgraded as its own release."""
    def write(cluster: Cluster, namespace: str, body: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as work:
            chart = Path(work, "chart")
            (chart / "templates").mkdir(parents=True)
            (chart / "Chart.yaml").write_text("apiVersion: v2\nname: one\nversion: 0.1.0\n")
            (chart / "templates" / "object.yaml").write_text("{{ toYaml .Values.object }}\n")
            values = Path(work, "values.yaml")
            values.write_text(yaml.safe_dump({"object": body}))
            subprocess.run(
                [str(cluster.helm_path), f"--kubeconfig={cluster.kubeconfig}", "upgrade",
                 "--install", body["metadata"]["name"], str(chart), "-n", namespace,
                 "-f", str(values), f"--server-side={server_side}"],
                check=True, capture_output=True, text=True, timeout=120)
    return write


# (how, how the object is first written, how it is updated, whether the null is stored
# when it is in the first write, when it is added by the update)
NULL_PATHS: list[tuple[str, Write, Write, bool, bool]] = [
    ("create and replace (POST, PUT)", _create, _replace, True, True),
    ("kubectl apply --server-side", _server_side_apply, _server_side_apply, True, True),
    ("kubectl apply (client-side)", apply, apply, False, False),
    ("helm (server-side, Helm 4's default)", _helm("true"), _helm("auto"), True, True),
    ("helm --server-side=false", _helm("false"), _helm("auto"), True, False),
]


@pytest.mark.parametrize(("how", "first", "then", "on_create", "on_update"), NULL_PATHS,
                         ids=[path[0] for path in NULL_PATHS])
def test_which_writes_keep_a_null(cluster: Cluster, namespace: str, how: str, first: Write,
                                  then: Write, on_create: bool, on_update: bool) -> None:
    """The apiserver stores a null under ``settings`` (no schema below it prunes one);
    client-side ``kubectl apply`` drops it on create (its request body leaves nulls out)
    and on update (a JSON merge patch, where null means "delete this field"), and so does
    a client-side Helm upgrade (a three-way merge patch) that adds it."""
    first(cluster, namespace, fleet("created", celery={"settings": _settings(None)}))
    first(cluster, namespace, fleet("updated", celery={"settings": {"beat_schedule": {
        "mine": KEPT}}}))
    then(cluster, namespace, fleet("updated", celery={"settings": _settings(None)}))
    for name, kept in (("created", on_create), ("updated", on_update)):
        stored = _stored(cluster, namespace, name)
        assert (HEARTBEAT in stored["beat_schedule"]) is kept, (how, name, stored)
        assert ("task_soft_time_limit" in stored) is kept, (how, name, stored)


def _worker_settings(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The Celery settings the fleet's workers load from its rendered ConfigMap."""
    def rendered() -> str:
        config = get(cluster, namespace, "configmap", f"{name}-celery")
        return str(config["data"]["settings.json"]) if config else ""
    raw = wait_until(rendered, what=f"the ConfigMap of {name}")
    return from_environment({"METAMAPPER_CELERY_SETTINGS": raw})


def _removed(cluster: Cluster, namespace: str, name: str) -> bool:
    settings = _worker_settings(cluster, namespace, name)
    assert "mine" in settings["beat_schedule"]
    return HEARTBEAT not in settings["beat_schedule"] and "task_soft_time_limit" not in settings


def test_the_marker_removes_defaults_through_kubectl_apply(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """``$remove`` is a string: client-side apply keeps it on create and on update, and the
    worker loading the rendered settings has neither the entry nor the setting."""
    apply(cluster, namespace, broker_secret(),
          fleet("created", celery={"settings": _settings(REMOVE)}),
          fleet("updated", celery={"settings": {"beat_schedule": {"mine": KEPT}}}))
    _worker_settings(cluster, namespace, "updated")   # rendered before the update
    apply(cluster, namespace, fleet("updated", celery={"settings": _settings(REMOVE)}))
    for name in ("created", "updated"):
        assert _stored(cluster, namespace, name) == _settings(REMOVE)
        wait_until(functools.partial(_removed, cluster, namespace, name),
                   what=f"{name}'s workers to lose the heartbeat entry and the time limit")


def test_a_stored_null_still_removes(cluster: Cluster, namespace: str,
                                     operator: OperatorProcess) -> None:
    """A null that reaches the stored object (created through the API) removes as before."""
    apply(cluster, namespace, broker_secret())
    _create(cluster, namespace, fleet("nulls", celery={"settings": _settings(None)}))
    assert _stored(cluster, namespace, "nulls") == _settings(None)
    assert _removed(cluster, namespace, "nulls")
