"""Probes and Flower on real pods.

- A worker whose broker (a Redis server of the test's own, reached by the pods on the host
  address) is stopped turns unready and is not restarted; its liveness command passes in the
  pod. When its event loop stalls (the process stopped with SIGSTOP from the host) the
  liveness probe fails and the kubelet restarts the container. The probes are the default
  ones, the worker's HTTP port, with shorter timings.
- Flower, fetched through its Service with basic auth, lists the fleet's worker.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import time
from pathlib import Path

from tests.e2e.conftest import NAMESPACE, Fleet, Fleets, service_get
from tests.helpers import OwnRedis, wait_until

MAX_AGE = 6
FAST_PROBES = {
    "workerLiveness": {
        "httpGet": {"path": f"/livez?max-age={MAX_AGE}", "port": "probes"},
        "initialDelaySeconds": 5, "periodSeconds": 2, "timeoutSeconds": 10,
        "failureThreshold": 2,
        # A stopped process ignores SIGTERM: do not wait the pool's whole grace period.
        "terminationGracePeriodSeconds": 5},
    "workerReadiness": {
        "httpGet": {"path": "/readyz", "port": "probes"},
        "periodSeconds": 2, "timeoutSeconds": 10, "failureThreshold": 1},
}
SETTINGS = {"metamapper_probe_interval": 1}


def worker_pod(fleet: Fleet) -> dict:
    pods = fleet.live_pods()
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def worker_ready(fleet: Fleet) -> bool:
    """The fleet's one worker pod is ready (False while the Deployment has not made it yet)."""
    pods = fleet.live_pods()
    assert len(pods) <= 1, [p["metadata"]["name"] for p in pods]
    return bool(pods) and ready(pods[0])


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod["status"].get("conditions") or [])


def restarts(pod: dict) -> int:
    return int(pod["status"]["containerStatuses"][0]["restartCount"])


def probe_in_pod(fleet: Fleet, pod: str, check: str) -> tuple[int, str]:
    done = fleet.stack.kubectl("exec", "-n", NAMESPACE, pod, "--", "metamapper-probe", check,
                               "--max-age", str(MAX_AGE), check=False)
    return done.returncode, done.stdout + done.stderr


def worker_main_pid(pod: str) -> int:
    """The pod's Celery worker main process on the host (the container's PID 1 is it)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if f"HOSTNAME={pod}".encode() in environ and b"worker" in argv:
            parent = Path(f"/proc/{ppid}/environ")
            try:
                if f"HOSTNAME={pod}".encode() in parent.read_bytes().split(b"\0"):
                    continue                              # a pool child, not the main one
            except OSError:
                pass
            return int(proc.name)
    raise AssertionError(f"no worker process of {pod}")


def test_worker_probes_ride_out_a_broker_outage_and_catch_a_stalled_loop(
        fleets: Fleets, own_redis: OwnRedis) -> None:
    fleet = fleets("probes", own_redis.url)
    fleet.apply(pool={"minReplicas": 1, "maxReplicas": 1, "autoscaling": {"enabled": False}},
                settings=SETTINGS, probes=FAST_PROBES)
    wait_until(lambda: worker_ready(fleet), timeout=120, what="worker ready")
    name = worker_pod(fleet)["metadata"]["name"]
    assert probe_in_pod(fleet, name, "worker-live")[0] == 0

    own_redis.stop()
    stopped_at = time.monotonic()
    wait_until(lambda: not ready(worker_pod(fleet)), timeout=60, what="unready without broker")
    unready_after = time.monotonic() - stopped_at
    time.sleep(5 * MAX_AGE)                               # many liveness periods
    pod = worker_pod(fleet)
    assert restarts(pod) == 0, "a worker was restarted because its broker was down"
    code, output = probe_in_pod(fleet, name, "worker-live")
    assert code == 0 and "not consuming" in output, output
    print(f"broker down: worker unready after {unready_after:.1f} s, live and not restarted "
          f"over {5 * MAX_AGE} s ({output.strip()})")

    own_redis.start()
    wait_until(lambda: worker_ready(fleet), timeout=120, what="ready once the broker is back")
    assert restarts(worker_pod(fleet)) == 0

    pid = worker_main_pid(name)
    os.kill(pid, signal.SIGSTOP)                          # the event loop stalls
    try:
        wait_until(lambda: restarts(worker_pod(fleet)) >= 1, timeout=90,
                   what="the kubelet restarting a stalled worker")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: worker_ready(fleet), timeout=120, what="ready after the restart")


def test_flower_lists_the_fleets_workers_behind_basic_auth(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("flower", redis_url)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flower-auth"},
              "stringData": {"auth": "admin:e2e-flower-pw"}}
    fleet.stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(secret))
    try:
        fleet.apply(pool={"minReplicas": 1, "maxReplicas": 1},
                    flower={"enabled": True, "basicAuthSecretRef": {"name": "flower-auth"}})
        fleet.wait_for_workers(1)
        worker = worker_pod(fleet)["metadata"]["name"]
        wait_until(lambda: any(ready(p) for p in fleet.pods("flower")), timeout=120,
                   what="Flower ready")
        [flower] = fleet.pods("flower")
        args = flower["spec"]["containers"][0]["args"]
        assert not any("redis://" in a for a in args), args
        ip = fleet.get("service", f"{fleet.name}-flower")["spec"]["clusterIP"]
        url = f"http://{ip}:5555/api/workers?refresh=1"
        assert service_get(url).status == 401

        token = base64.b64encode(b"admin:e2e-flower-pw").decode()
        auth = {"Authorization": f"Basic {token}"}

        def workers() -> list[str]:
            reply = service_get(url, auth)
            assert reply.status == 200, reply
            return list(json.loads(reply.body))

        names = wait_until(lambda: [n for n in workers() if worker in n], timeout=60,
                           what="Flower listing the worker")
        assert service_get(f"http://{ip}:5555/workers", auth).status == 200
        print(f"Flower through its Service {ip}:5555 lists {names}")
    finally:
        fleet.stack.kubectl("delete", "-n", NAMESPACE, "secret", "flower-auth",
                            "--ignore-not-found")
