"""Scale-down safety under churn: drain before delete vs a plain scale-down.

Two Metamappers side by side on one control plane with a real node (every pod a real
``celery worker`` of the workload image), each in a namespace of its own with its own
Redis database; one pool each: concurrency 1, 1-4 pods, target 1 message per pod, a
termination grace period of GRACE seconds, and a visibility timeout of VISIBILITY seconds
(so a task cut off is delivered again within the run). Both are sized from the queue's
length alone (in-flight messages not counted), so both want to shrink while long tasks
still run: the harshest case for a scale-down.

* **ours**: the operator (2 s polling) with ``countInFlight: false`` and a WINDOW s
  scale-down window: it drains the workers it removes and removes exactly those;
* **plain**: ``bench/_hpa.py`` (the HPA's default behaviour over KEDA's list length,
  the same WINDOW s window) lowers the Deployment's replicas and the ReplicaSet controller
  picks the pods; SIGTERM, Celery's warm shutdown, SIGKILL at the end of the grace period.

ROUNDS rounds, one every ROUND_SECONDS: LONG tasks of LONG_SECONDS (longer than the grace
period) and SHORT tasks of SHORT_SECONDS. Then TAIL seconds for redeliveries. Per
configuration: tasks **interrupted** (started more often than finished), **redelivered**
(started more than once), **lost** (never finished by the end), ran twice, and the
worker-seconds (``status.readyReplicas`` integrated).

Usage::

    python bench/scale_down_churn.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from _common import (
    cluster,
    metamapper,
    namespace_manifest,
    operator,
    print_table,
    redis_server,
    say,
)
from _hpa import Behaviour, hpa_model
from devenv.waiting import wait_until
from devenv.workload import MODULE, TASK, records, tally
from trace_replay import ready_watch

NAME = "churn"
POOL = "default"
DEPLOYMENT = f"{NAME}-{POOL}"
MAX_REPLICAS = 4
GRACE = 10
VISIBILITY = 60
WINDOW = 20
ROUNDS = 4
ROUND_SECONDS = 70.0
# Long tasks outlast the plain scale-down by a margin: it comes WINDOW s after the last
# high recommendation, on the HPA's 15 s sync (30 to 45 s after the burst's first sync),
# SIGKILL GRACE s later; with 35 s tasks whether it cut any off hung on how fast the new
# pods started (on a quiet node they finished first). Shorter than VISIBILITY, or Redis
# would deliver a running task again.
LONG, LONG_SECONDS = 3, 50.0
SHORT, SHORT_SECONDS = 5, 2.0
# Room after the last round for a task cut off in it to come back (the visibility timeout,
# then Redis restores it) and run in full, so that "lost" means lost, not late.
TAIL = 160.0
ONCE_A_DAY = 86400.0


@dataclass
class Fleet:
    label: str
    namespace: str
    broker: str
    image: str
    plain: bool
    sent: list[str] = field(default_factory=list)
    app: Celery = field(init=False)

    def __post_init__(self) -> None:
        self.app = Celery(self.namespace, broker=self.broker, set_as_current=False)

    def manifest(self) -> dict[str, Any]:
        pool = {"name": POOL, "queues": [POOL], "concurrency": 1, "minReplicas": 1,
                "maxReplicas": MAX_REPLICAS, "terminationGracePeriodSeconds": GRACE,
                "autoscaling": {"targetBacklogPerReplica": 1, "countInFlight": False,
                                "scaleDownStabilizationSeconds": WINDOW}}
        body = metamapper(self.namespace, NAME, self.broker, [pool])
        body["spec"]["image"] = self.image
        body["spec"]["celery"] = {"settings": {
            "imports": [MODULE],
            "broker_transport_options": {"visibility_timeout": VISIBILITY}}}
        return body

    def send(self, count: int, seconds: float) -> None:
        for _ in range(count):
            task_id = uuid.uuid4().hex
            self.app.send_task(TASK, args=[task_id, seconds, self.broker], queue=POOL)
            self.sent.append(task_id)

    def redelivered(self) -> int:
        return sum(1 for task_id in self.sent
                   if len(records(self.broker, "started", task_id)) > 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    horizon = ROUNDS * ROUND_SECONDS + TAIL
    with tempfile.TemporaryDirectory(prefix="bench-churn-") as tmp:
        root = Path(tmp)
        with ExitStack() as stack:
            kube = stack.enter_context(cluster(root / "cluster", node=True))
            assert kube.images is not None
            redis_url = stack.enter_context(redis_server(root / "redis"))
            base = redis_url.removesuffix("/0")
            fleets = [Fleet("ours (drain before delete)", "churn-ours", f"{base}/1",
                            kube.images.workload, plain=False),
                      Fleet("plain (the controller picks)", "churn-plain", f"{base}/2",
                            kube.images.workload, plain=True)]
            kube.apply([namespace_manifest(f.namespace) for f in fleets])
            stack.enter_context(operator(kube, root / "operator-ours.log", "--poll-interval",
                                         "2", "--namespace", "churn-ours"))
            stack.enter_context(operator(kube, root / "operator-plain.log", "--poll-interval",
                                         f"{ONCE_A_DAY:g}", "--namespace", "churn-plain"))
            watch = stack.enter_context(ready_watch(kube))
            for fleet in fleets:
                stack.enter_context(fleet.app)
            kube.apply([fleet.manifest() for fleet in fleets])
            say("waiting for both pools at one pod ...")
            wait_until(lambda: all(watch.ready(f.namespace) == 1 for f in fleets), 180,
                       "the pools at their minimum", interval=0.5)
            plain = next(f for f in fleets if f.plain)
            stack.enter_context(hpa_model(
                kube, plain.namespace, DEPLOYMENT, plain.broker, POOL,
                Behaviour(1, 1, MAX_REPLICAS, down_window_seconds=WINDOW)))
            say(f"{ROUNDS} rounds of {LONG} x {LONG_SECONDS:g} s and {SHORT} x "
                f"{SHORT_SECONDS:g} s tasks, every {ROUND_SECONDS:g} s; {horizon:g} s in all")
            start = time.monotonic()
            for round_ in range(ROUNDS):
                wake = start + round_ * ROUND_SECONDS
                time.sleep(max(0.0, wake - time.monotonic()))
                for fleet in fleets:
                    fleet.send(LONG, LONG_SECONDS)
                    fleet.send(SHORT, SHORT_SECONDS)
                say(f"  round {round_ + 1} sent; ready pods: " + ", ".join(
                    f"{f.namespace}={watch.ready(f.namespace)}" for f in fleets))
            time.sleep(max(0.0, start + horizon - time.monotonic()))
            rows = []
            for fleet in fleets:
                result = tally(fleet.broker, fleet.sent)
                used, peak = watch.usage(fleet.namespace, start, start + horizon)
                rows.append([fleet.label, result.sent, result.interrupted, fleet.redelivered(),
                             result.lost, result.duplicated, f"{used:.0f}", peak])

    print(f"\n{ROUNDS} rounds x ({LONG} tasks of {LONG_SECONDS:g} s + {SHORT} of "
          f"{SHORT_SECONDS:g} s), grace {GRACE} s, window {WINDOW} s, visibility timeout "
          f"{VISIBILITY} s; figures over {horizon:g} s")
    print_table(["configuration", "tasks", "interrupted", "redelivered", "lost", "ran twice",
                 "worker-s", "peak workers"], rows)


if __name__ == "__main__":
    main()
