"""The local runtime against the real control plane, running real processes."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

from devenv.localnode import LocalNode, expand, pod_dir
from tests.conftest import Cluster
from tests.devenv.conftest import (
    NodeProcess,
    apply,
    condition,
    deployment,
    pods,
    ready_pods,
    running,
)
from tests.helpers import wait_until

# Writes its environment, arguments and folder to /data/env.json, then runs until stopped.
DUMP_ENV = """
with open(os.path.join(DATA, "env.tmp"), "w") as out:
    json.dump({"env": dict(os.environ), "argv": sys.argv[1:], "cwd": os.getcwd()}, out)
os.replace(os.path.join(DATA, "env.tmp"), os.path.join(DATA, "env.json"))
time.sleep(600)
"""

# A "task" in a child process (SIGTERM would kill it) that works 3 s more once its
# parent has been asked to stop, then notes that it finished.
TASK = """
import os, sys, time
while not os.path.exists(os.path.join(sys.argv[1], "term")):
    time.sleep(0.1)
time.sleep(3)
open(os.path.join(sys.argv[1], "task-done"), "w").close()
"""

# Warm shutdown, the way Celery does it: on SIGTERM, wait for the running task, then exit.
GRACEFUL = f"""
task = subprocess.Popen([sys.executable, "-c", {TASK!r}, DATA])
def stop(*_):
    mark("term")
    task.wait()
    mark("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
mark("pid", str(os.getpid()))
while True:
    time.sleep(1)
"""

# Notes SIGTERM and carries on regardless.
STUBBORN = """
signal.signal(signal.SIGTERM, lambda *_: mark("term"))
mark("pid", str(os.getpid()))
while True:
    time.sleep(1)
"""


def env_dump(node: NodeProcess, pod: str) -> dict[str, object]:
    path = node.data(pod) / "env.json"
    wait_until(path.exists, timeout=30, what=f"{path}")
    dump: dict[str, object] = json.loads(path.read_text())
    return dump


def pid_of(node: NodeProcess, pod: str) -> int:
    path = node.data(pod) / "pid"
    wait_until(lambda: path.exists() and path.read_text().strip(), what=f"{path}")
    return int(path.read_text())


def exists(cluster: Cluster, namespace: str, pod: str) -> bool:
    return any(p["metadata"]["name"] == pod for p in pods(cluster, namespace))


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$$(A) $(MISSING) $( $(A", env) == "$(A) $(MISSING) $( $(A"
    assert expand("a$$b$", env) == "a$b$"


def test_pods_run_with_their_resolved_environment(cluster: Cluster, namespace: str,
                                                  local_node: NodeProcess) -> None:
    apply(cluster, namespace,
          {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
           "stringData": {"password": "s3cret"}},
          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
           "data": {"level": "debug", "colour": "blue"}},
          deployment("env", DUMP_ENV, args=("$(LEVEL)", "/tmp/beat-schedule"), env=[
              {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                  "key": "password"}}},
              {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings",
                                                                  "key": "level"}}},
              {"name": "ABSENT", "valueFrom": {"secretKeyRef": {
                  "name": "nowhere", "key": "x", "optional": True}}},
              {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
              {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {
                  "fieldPath": "metadata.namespace"}}},
              {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
              {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
              {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
              {"name": "GREETING", "value": "hi $(POD_NAME) $$(POD_NAME) $(UNDEFINED)"},
          ], env_from=[{"configMapRef": {"name": "settings"}, "prefix": "CM_"}]))

    [pod] = ready_pods(cluster, namespace, 1)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    assert pod["spec"]["nodeName"] == "local"
    assert pod["status"]["podIP"] == "127.0.0.1"
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] is True and "running" in status["state"]
    assert status["restartCount"] == 0

    dump = env_dump(local_node, name)
    env = dump["env"]
    assert isinstance(env, dict)
    assert env["PASSWORD"] == "s3cret"
    assert env["LEVEL"] == "debug"
    assert "ABSENT" not in env
    assert (env["CM_level"], env["CM_colour"]) == ("debug", "blue")
    assert (env["POD_NAME"], env["POD_NAMESPACE"], env["POD_UID"]) == (name, namespace, uid)
    assert (env["POD_IP"], env["NODE"]) == ("127.0.0.1", "local")
    assert env["GREETING"] == f"hi {name} $(POD_NAME) $(UNDEFINED)"
    folder = pod_dir(local_node.state, namespace, name)
    assert env["TMPDIR"] == str(folder / "tmp")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert dump["argv"] == [str(folder / "data"), "debug", str(folder / "tmp/beat-schedule")]
    assert dump["cwd"] == str(folder)
    node = json.loads(cluster.kubectl("get", "node", "local", "-o", "json").stdout)
    assert condition(node, "Ready") == "True"


def test_missing_secret_blocks_the_container_until_it_exists(
        cluster: Cluster, namespace: str, local_node: NodeProcess) -> None:
    apply(cluster, namespace, deployment("late", DUMP_ENV, env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]))

    def waiting() -> dict[str, str] | None:
        for pod in pods(cluster, namespace):
            for status in pod["status"].get("containerStatuses", []):
                return status["state"].get("waiting")  # type: ignore[no-any-return]
        return None

    state = wait_until(lambda: (w := waiting()) and w["reason"] == "CreateContainerConfigError"
                       and w, timeout=60, what="CreateContainerConfigError")
    assert state["message"] == 'secret "late" not found'
    [pod] = pods(cluster, namespace)
    assert pod["status"]["phase"] == "Pending"
    assert not (local_node.data(pod["metadata"]["name"]) / "env.json").exists()

    apply(cluster, namespace, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"},
                               "stringData": {"token": "t0ken"}})
    [pod] = ready_pods(cluster, namespace, 1)
    assert env_dump(local_node, pod["metadata"]["name"])["env"]["TOKEN"] == "t0ken"  # type: ignore[index]


def test_scale_down_waits_for_the_warm_shutdown(cluster: Cluster, namespace: str,
                                                local_node: NodeProcess) -> None:
    apply(cluster, namespace, deployment("workers", GRACEFUL, replicas=2, grace=30))
    names = [p["metadata"]["name"] for p in ready_pods(cluster, namespace, 2)]
    pids = {name: pid_of(local_node, name) for name in names}

    cluster.kubectl("scale", "-n", namespace, "deployment/workers", "--replicas=1")
    [leaving] = wait_until(lambda: [p["metadata"]["name"] for p in pods(cluster, namespace)
                                    if p["metadata"].get("deletionTimestamp")],
                           what="a pod to be deleted")
    [staying] = [name for name in names if name != leaving]
    term, exit = local_node.data(leaving) / "term", local_node.data(leaving) / "exit"
    wait_until(term.exists, what="SIGTERM to reach the leaving pod")
    # The pod is still there while its process finishes its work ...
    assert not exit.exists()
    assert exists(cluster, namespace, leaving)
    # ... and goes away only once the process has exited, its task done: SIGTERM went to
    # the main process only, not to the task's process.
    wait_until(lambda: not exists(cluster, namespace, leaving), timeout=60,
               what="the leaving pod to disappear")
    assert exit.exists()
    assert (local_node.data(leaving) / "task-done").exists()
    assert not running(pids[leaving])
    assert running(pids[staying])
    assert not (local_node.data(staying) / "term").exists()
    assert [p["metadata"]["name"] for p in ready_pods(cluster, namespace, 1)] == [staying]


def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
        cluster: Cluster, namespace: str, local_node: NodeProcess) -> None:
    apply(cluster, namespace, deployment("stubborn", STUBBORN, grace=2))
    [pod] = ready_pods(cluster, namespace, 1)
    name = pod["metadata"]["name"]
    pid = pid_of(local_node, name)

    deleted = time.monotonic()
    cluster.kubectl("delete", "pod", "-n", namespace, name, "--wait=false")
    wait_until(lambda: not exists(cluster, namespace, name), timeout=60,
               what="the pod to disappear")
    assert time.monotonic() - deleted >= 2  # the whole grace period was granted
    assert (local_node.data(name) / "term").exists()
    assert not running(pid)


def test_a_crashing_container_is_restarted_with_back_off(
        cluster: Cluster, namespace: str, local_node: NodeProcess) -> None:
    apply(cluster, namespace, deployment("crash", 'mark("starts")\nsys.exit(3)\n'))
    reasons: set[str] = set()

    def restarted() -> bool:
        for pod in pods(cluster, namespace):
            for status in pod["status"].get("containerStatuses", []):
                reasons.update(s["reason"] for s in status["state"].values() if "reason" in s)
                if status["restartCount"] >= 2:
                    assert status["lastState"]["terminated"]["exitCode"] == 3
                    return True
        return False

    wait_until(restarted, timeout=90, interval=0.1, what="two restarts")
    assert "CrashLoopBackOff" in reasons
    [pod] = pods(cluster, namespace)
    starts = (local_node.data(pod["metadata"]["name"]) / "starts").read_text().splitlines()
    assert len(starts) >= 3
    assert condition(pod, "Ready") == "False"


@pytest.mark.timeout(180)
async def test_stopping_the_runtime_leaves_no_process(cluster: Cluster, namespace: str,
                                                      tmp_path: Path) -> None:
    """In-process, through the class: pods that ignore SIGTERM and have a child of their own."""
    script = ('child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])\n'
              'signal.signal(signal.SIGTERM, signal.SIG_IGN)\n'
              'mark("pids", f"{os.getpid()} {child.pid}")\n'
              'time.sleep(600)\n')
    apply(cluster, namespace, deployment("keep", script, replicas=2))
    state = tmp_path / "node"
    node = LocalNode(cluster.kubeconfig, state, [namespace])
    await node.start()
    try:
        names = [p["metadata"]["name"] for p in
                 await asyncio.to_thread(ready_pods, cluster, namespace, 2)]
        files = [pod_dir(state, namespace, name) / "data" / "pids" for name in names]
        await asyncio.to_thread(wait_until, lambda: all(f.exists() and f.read_text().strip()
                                                        for f in files), what="pid files")
        pids = [int(pid) for f in files for pid in f.read_text().split()]
        assert len(pids) == 4 and all(running(pid) for pid in pids)
    finally:
        await node.stop()
        cluster.kubectl("delete", "pods", "--all", "-n", namespace, "--force",
                        "--grace-period=0", "--wait=false")
    await asyncio.to_thread(wait_until, lambda: not any(running(p) for p in pids),
                            timeout=10, what="every pod process to be gone")
