"""What a user feels on a real node: a worker pod's start, and a burst's first task on a new pod.

One stack as ``make demo`` runs it (a control plane with a real node, the project's images
already in the node's store, the operator installed with ``helm install`` and polling
every second) and one fleet of the workload image: one pool, concurrency 1, 1-4 pods,
short windows. Two figures, each over ``--rounds`` rounds:

* **pod start**: a worker pod from its first sight in a ``kubectl get --watch`` (the
  ReplicaSet created it) to Ready (the image is present: no pull);
* **burst -> first task on a new pod**: from the last message of a burst of 6 tasks of
  5 s in Redis to the first ``started`` record of a task on a pod that did not exist
  before the burst; this adds the operator's reaction (one polling interval), the pod's
  start and Celery's start.

Between rounds the pool shrinks back to one pod.

Usage::

    python bench/pod_start.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml
from celery import Celery

from _common import percentile, print_table, say
from devenv import redis_claims
from devenv.errors import DevenvError
from devenv.stack import Stack
from devenv.waiting import wait_until
from devenv.workload import MODULE, TASK, records
from metamapper_operator import crd

NAMESPACE = "bench"
NAME = "podstart"
BURST, TASK_SECONDS = 6, 5.0
#: How long the run holds its Redis database (released at its end): above a run's length.
CLAIM_SECONDS = 3600


class PodWatch:
    """Each worker pod: when a watch first saw it and when it first reported Ready."""

    def __init__(self, stack: Stack) -> None:
        self.seen: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        template = ('{.metadata.name}|{.status.conditions[?(@.type=="Ready")].status}'
                    '{"\\n"}')
        self._proc = stack.kubectl_popen("get", "pods", "-n", NAMESPACE, "--watch", "-o",
                                         f"jsonpath={template}")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            at = time.time()
            name, _, ready = line.strip().partition("|")
            self.seen.setdefault(name, at)
            if ready == "True":
                self.ready.setdefault(name, at)

    def starts(self) -> list[float]:
        return [self.ready[n] - self.seen[n] for n in self.ready]

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait()


def fleet(stack: Stack, broker: str) -> str:
    assert stack.images is not None
    return yaml.safe_dump({
        "apiVersion": crd.API_VERSION, "kind": crd.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {"image": stack.images.workload, "broker": {"url": broker},
                 "celery": {"settings": {"imports": [MODULE]}},
                 "scheduler": {"enabled": False},
                 "pools": [{"name": "default", "queues": ["default"], "concurrency": 1,
                            "minReplicas": 1, "maxReplicas": 4,
                            "terminationGracePeriodSeconds": 30,
                            "autoscaling": {"scaleDownStabilizationSeconds": 3,
                                            "targetBacklogPerReplica": 2}}]}})


def ready_workers(stack: Stack) -> list[str]:
    out = stack.kubectl("get", "pods", "-n", NAMESPACE, "-o",
                        'jsonpath={range .items[?(@.status.phase=="Running")]}'
                        '{.metadata.name}{"\\n"}{end}').stdout
    return out.split()


def burst_round(stack: Stack, broker: str, app: Celery) -> float:
    """Seconds from a burst's last message to a task starting on a new pod."""
    before = set(ready_workers(stack))
    ids = [uuid.uuid4().hex for _ in range(BURST)]
    for task_id in ids:
        app.send_task(TASK, args=[task_id, TASK_SECONDS, broker], queue="default")
    sent = time.time()

    def on_new_pod() -> float | None:
        starts = [r.at for i in ids for r in records(broker, "started", i)
                  if r.pod not in before]
        return min(starts) if starts else None

    first = wait_until(on_new_pod, 120, "a task on a new pod", interval=0.1)
    wait_until(lambda: len(ready_workers(stack)) == 1 and
               all(records(broker, "done", i) for i in ids), 180, "the pool back at one pod",
               interval=0.5)
    assert first is not None   # wait_until returns the predicate's truthy value
    return first - sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-podstart-") as tmp:
        stack = Stack(Path(tmp), NAMESPACE, poll_seconds=1.0)
        held: redis_claims.Claim | None = None
        try:
            say("starting the stack (services, images, control plane, node, operator) ...")
            stack.start(say)
            # Claimed as the suite's tests claim theirs, so that neither empties the other's.
            held = redis_claims.claim(range(1, 256), seconds=CLAIM_SECONDS)
            if held is None:
                raise DevenvError("every database of the development Redis is claimed")
            broker = held.url
            pods = PodWatch(stack)
            stack.kubectl("apply", "-f", "-", input=fleet(stack, broker))
            wait_until(lambda: len(ready_workers(stack)) == 1, 120, "the first worker",
                       interval=0.2)
            app = Celery("bench", broker=broker, set_as_current=False)
            bursts = []
            for n in range(args.rounds):
                bursts.append(burst_round(stack, broker, app))
                say(f"  round {n + 1}: first task on a new pod {bursts[-1]:.2f} s after the "
                    "burst")
            app.close()
            pods.close()
            starts = pods.starts()
        finally:
            stack.stop()
            if held is not None:
                redis_claims.release(held)
    print_table(["figure", "samples", "min s", "p50 s", "p95 s", "max s"], [
        ["worker pod start (seen -> Ready)", len(starts), f"{min(starts):.2f}",
         f"{percentile(starts, 50):.2f}", f"{percentile(starts, 95):.2f}",
         f"{max(starts):.2f}"],
        ["burst -> first task on a new pod", len(bursts), f"{min(bursts):.2f}",
         f"{percentile(bursts, 50):.2f}", f"{percentile(bursts, 95):.2f}",
         f"{max(bursts):.2f}"],
    ])


if __name__ == "__main__":
    main()
