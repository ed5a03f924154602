"""The local runtime as the demo runs it: ``python -m devenv.localnode``.

Pods here are Deployments whose container runs a small Python script; the script's
first argument is ``/data``, an emptyDir the runtime rewrites to the pod's own folder,
where the script leaves files (its environment, its pid, signal markers) for the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devenv.localnode import pod_dir
from tests.conftest import Cluster
from tests.helpers import wait_until

Json = dict[str, Any]

# Shared by every script: the data folder and a helper that appends a line to a file.
PRELUDE = """\
import json, os, signal, subprocess, sys, time
DATA = sys.argv[1]
def mark(name, text=""):
    with open(os.path.join(DATA, name), "a") as out:
        out.write(text + "\\n")
"""


def deployment(name: str, script: str, *, replicas: int = 1, grace: int | None = None,
               env: list[Json] | None = None, env_from: list[Json] | None = None,
               args: tuple[str, ...] = ()) -> Json:
    """A Deployment running ``PRELUDE + script`` with emptyDirs at /data and /tmp."""
    container: Json = {
        "name": "main", "image": "example.invalid/ignored:1", "command": ["python", "-c",
                                                                          PRELUDE + script],
        "args": ["/data", *args], "env": env or [], "envFrom": env_from or [],
        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    spec: Json = {"containers": [container],
                  "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def apply(cluster: Cluster, namespace: str, *objects: Json) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def pods(cluster: Cluster, namespace: str) -> list[Json]:
    items: list[Json] = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o",
                                                   "json").stdout)["items"]
    return items


def condition(pod: Json, kind: str) -> str | None:
    return next((c["status"] for c in pod.get("status", {}).get("conditions", [])
                 if c["type"] == kind), None)


def ready_pods(cluster: Cluster, namespace: str, count: int) -> list[Json]:
    """Wait until ``count`` pods run and are Ready (and no other pod is left)."""
    def check() -> list[Json] | None:
        found = pods(cluster, namespace)
        ok = [p for p in found if p["status"].get("phase") == "Running"
              and condition(p, "Ready") == "True"]
        return ok if len(ok) == count == len(found) else None

    return wait_until(check, timeout=90, what=f"{count} Running and Ready pods")


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, waiting to be reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class NodeProcess:
    proc: subprocess.Popen[bytes]
    state: Path
    namespace: str
    log: Path

    def data(self, pod: str) -> Path:
        """The folder standing in for the pod's /data emptyDir."""
        return pod_dir(self.state, self.namespace, pod) / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


@pytest.fixture
def local_node(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[NodeProcess]:
    """The runtime, limited to this test's namespace, in a process of its own."""
    state, log = tmp_path / "node", tmp_path / "localnode.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devenv.localnode",
             "--kubeconfig", str(cluster.kubeconfig), "--namespace", namespace,
             "--state-dir", str(state)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    node = NodeProcess(proc, state, namespace, log)
    try:
        yield node
    finally:
        node.stop()
        # Nothing runs the pods bound to the node any more: remove them outright, so that
        # the namespace's deletion does not wait for them.
        cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--force",
                        "--grace-period=0", "--wait=false", check=False)
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-5000:]
    assert "Traceback" not in output, output[-5000:]
