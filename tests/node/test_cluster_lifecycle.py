"""``make cluster-up`` / ``make cluster-down`` as a person runs them: a real node that runs
pods, nothing left behind afterwards (process, mount, network namespace, veth, bridge), and
the same again on the state the first cluster left (components' credentials, the node
object as cluster-down left it).

Runs after the end-to-end package (whose stack is torn down first): only one node may
use the machine's container runtime at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from devenv import node
from devenv.images import build_all
from devenv.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devenv.controlplane", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def run_pods(up: subprocess.CompletedProcess[str], image: str) -> None:
    """With the exports ``up`` printed: one pod runs to completion (its log read back),
    one is left running for cluster-down to stop."""
    kubeconfig = next(line.split("=", 1)[1] for line in up.stdout.splitlines()
                      if line.startswith("export KUBECONFIG="))
    kubectl = next(line.split("=", 1)[1].split(":")[0] for line in up.stdout.splitlines()
                   if line.startswith("export PATH=")) + "/kubectl"

    def kube(*args: str) -> str:
        return subprocess.run([kubectl, f"--kubeconfig={kubeconfig}", *args],
                              capture_output=True, text=True, check=True).stdout

    def phase(pod: str) -> str:
        return str(json.loads(kube("get", "pod", pod, "-o", "json"))["status"].get("phase"))

    kube("delete", "pods", "--all", "--wait=true")   # the second time: the first ones
    kube("run", "hello", f"--image={image}", "--restart=Never", "--command", "--",
         "metamapper", "--help")
    wait_until(lambda: phase("hello") == "Succeeded", timeout=90, what="the pod to run")
    assert "worker" in kube("logs", "hello")
    kube("run", "sleeper", f"--image={image}", "--restart=Never", "--command", "--",
         "sleep", "600")
    wait_until(lambda: phase("sleeper") == "Running", timeout=90, what="a pod left running")


def test_cluster_up_runs_pods_and_cluster_down_leaves_nothing_behind_twice(
        tmp_path: Path) -> None:
    images = build_all()
    for _ in range(2):
        up = cli("up", "--dir", str(tmp_path))
        try:
            assert up.returncode == 0, up.stderr + up.stdout
            run_pods(up, images.worker)
        finally:
            down = cli("down", "--dir", str(tmp_path))
        assert down.returncode == 0, down.stderr + down.stdout
        assert node.leftovers() == []
