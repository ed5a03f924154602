"""What only a real runtime shows: the images, the restricted security context, signals
reaching Celery, memory limits, and the operator's own pod and Service."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request

from devenv.stack import OPERATOR_NAMESPACE
from devenv.waiting import wait_until
from devenv.workload import HOG, records
from tests.e2e.conftest import NAMESPACE, Fleet, Fleets, service_get

COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "make")


def exec_in(fleet: Fleet, pod: str, *command: str, namespace: str = NAMESPACE,
            ) -> subprocess.CompletedProcess[str]:
    return fleet.stack.kubectl("exec", "-n", namespace, pod, "--", *command, check=False)


def only_worker(fleet: Fleet) -> str:
    fleet.wait_for_workers(1)
    (pod,) = [p["metadata"]["name"] for p in fleet.pods()]
    return pod


def test_workers_run_as_10001_with_a_read_only_root_under_the_restricted_profile(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("secure", redis_url)
    labels = fleet.get("namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    fleet.apply()
    pod = only_worker(fleet)

    ids = exec_in(fleet, pod, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert ids.stdout.split() == ["10001", "10001"], ids
    written = exec_in(fleet, pod, "touch", "/opt/metamapper/x")
    assert written.returncode != 0 and "Read-only file system" in written.stderr, written
    assert exec_in(fleet, pod, "touch", "/tmp/x").returncode == 0   # its emptyDir
    pid1 = exec_in(fleet, pod, "cat", "/proc/1/cmdline").stdout.split("\0")
    assert "celery" in pid1[1] and "worker" in pid1, pid1   # Celery itself is PID 1
    capabilities = exec_in(fleet, pod, "grep", "CapEff", "/proc/1/status").stdout.split()
    assert capabilities == ["CapEff:", "0000000000000000"], capabilities


def test_sigterm_reaches_celery_as_pid_1_and_warm_shutdown_finishes_the_running_task(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("sigterm", redis_url)
    fleet.apply({"concurrency": 1, "minReplicas": 1, "maxReplicas": 1})
    pod = only_worker(fleet)
    log = fleet.stack.kubectl_popen("logs", "-f", "-n", NAMESPACE, pod)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(log.stdout or []), daemon=True)
    reader.start()
    (task,) = fleet.send(1, 8.0)
    wait_until(lambda: records(fleet.records, "started", task), timeout=30, what="started")

    deleted_at = time.time()
    fleet.stack.kubectl("delete", "pod", "-n", NAMESPACE, pod, "--wait=false")
    wait_until(lambda: pod not in [p["metadata"]["name"] for p in fleet.pods()],
               timeout=90, interval=0.5, what=f"{pod} gone")
    gone_at = time.time()
    log.wait(30)
    reader.join(5)

    (started,) = records(fleet.records, "started", task)
    (done,) = records(fleet.records, "done", task)   # finished once, in the deleted pod
    assert done.pod == started.pod == pod
    assert deleted_at < done.at < gone_at, (deleted_at, done.at, gone_at)
    assert gone_at - deleted_at < 60, "well within the grace period"
    text = "".join(output)
    assert "warm shutdown" in text.lower(), text[-2000:]


def test_a_worker_over_its_memory_limit_is_killed_and_its_task_redelivered(
        fleets: Fleets, redis_url: str) -> None:
    """The runtime's OOM killer ends the worker process holding too much memory; the
    message, acknowledged only after the task (late acks), is delivered again."""
    fleet = fleets("oom", redis_url)
    fleet.apply({"concurrency": 1, "minReplicas": 1, "maxReplicas": 1,
                 "resources": {"requests": {"memory": "128Mi"},
                               "limits": {"memory": "256Mi"}}},
                settings={"broker_transport_options": {"visibility_timeout": 10}})
    only_worker(fleet)
    task = "oom-" + str(time.time_ns())
    fleet.send_task(HOG, [task, 512, fleet.records])

    wait_until(lambda: records(fleet.records, "done", task), timeout=120, interval=0.5,
               what="the task done after its redelivery")
    started = records(fleet.records, "started", task)
    assert len(started) == 2 and len(records(fleet.records, "done", task)) == 1, started
    assert fleet.tally([task]).lost == 0


def test_images_carry_no_compiler_and_metamapper_help_runs_in_each(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("images", redis_url)
    fleet.apply()
    worker = only_worker(fleet)
    operator = fleet.stack.operator_pod()["metadata"]["name"]
    for pod, namespace in ((worker, NAMESPACE), (operator, OPERATOR_NAMESPACE)):
        helped = exec_in(fleet, pod, "metamapper", "--help", namespace=namespace)
        assert helped.returncode == 0 and "worker" in helped.stdout, helped
        found = exec_in(fleet, pod, "sh", "-c", f"command -v {' '.join(COMPILERS)}",
                        namespace=namespace)
        assert found.stdout.strip() == "", f"{pod}: {found.stdout}"
    # The operator asks workers which are busy over the broker's Celery transport before a
    # scale-down (Redis and RabbitMQ; SQS has no broadcast).
    transports = exec_in(fleet, operator, "python", "-c",
                         "import kombu.transport.redis, kombu.transport.pyamqp",
                         namespace=OPERATOR_NAMESPACE)
    assert transports.returncode == 0, transports.stderr


def test_the_operator_runs_in_its_pod_with_the_charts_account_and_serves_its_endpoints(
        fleets: Fleets) -> None:
    stack = fleets.stack
    pod = stack.operator_pod()
    assert pod["spec"]["serviceAccountName"] == "metamapper-operator"
    assert pod["status"]["containerStatuses"][0]["ready"]   # its liveness/readiness probe
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8080/healthz",
                                timeout=10) as response:
        assert response.status == 200
    service = json.loads(stack.kubectl("get", "service", "-n", OPERATOR_NAMESPACE,
                                       "metamapper-operator-metrics", "-o", "json").stdout)
    address = f"{service['spec']['clusterIP']}:{service['spec']['ports'][0]['port']}"
    reply = service_get(f"http://{address}/metrics")
    assert reply.status == 200, reply
    metrics = reply.body.decode()
    assert "metamapper_autoscale_cycle_seconds" in metrics
    logs = stack.operator_logs()
    assert "kopf" in logs.lower() or logs.strip(), "kubectl logs shows the operator's log"
