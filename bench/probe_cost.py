"""What idle worker pods cost the node, by the way their probes are asked.

One control plane with a real node (kubelet, containerd), one operator polling every 2 s,
one Metamapper of the workload image with one pool of ``--pods`` pods (concurrency 2,
autoscaling off) that receives no task. The machine's CPU (``/proc/stat``: busy over
total, in % of one core) is measured for ``--seconds`` in each state, once every pod of
the pool runs the state's pod template and is Ready (or, without a readiness probe,
Running) and ``SETTLE_SECONDS`` have passed:

* **no worker pods**: the pool at 0 pods (the control plane, the node and the operator);
* **HTTP probes**: the default probes (``GET /readyz`` every 5 s, ``GET /livez`` every
  20 s, served by the worker's main process);
* **exec probes**: the same checks and timing as ``metamapper-probe`` commands (the probes
  before the HTTP ones): the kubelet has the runtime start a process in the container at
  every period;
* **no probes**: ``probes.enabled: false``.

Every figure includes what the machine does anyway; the column "over no pods" subtracts
the first. Usage::

    python bench/probe_cost.py [--pods 14] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from _common import (
    Cluster,
    cluster,
    metamapper,
    namespace_manifest,
    operator,
    print_table,
    redis_server,
    say,
)
from devenv.waiting import wait_until
from devenv.workload import MODULE
from metamapper_operator.builders import WORKER_LIVENESS, WORKER_READINESS

NAMESPACE = "probe-cost"
NAME = "idle"
POOL = "default"
SETTLE_SECONDS = 15.0
CORES = os.cpu_count() or 1
# The default checks as commands of the image, with the default probes' timing.
EXEC_PROBES = {
    "workerLiveness": {**{k: v for k, v in WORKER_LIVENESS.items() if k != "httpGet"},
                       "exec": {"command": ["metamapper-probe", "worker-live",
                                            "--max-age", "60"]}},
    "workerReadiness": {**{k: v for k, v in WORKER_READINESS.items() if k != "httpGet"},
                        "exec": {"command": ["metamapper-probe", "worker-ready"]}},
}


@dataclass(frozen=True)
class State:
    label: str
    pods: int
    probes: dict[str, Any]


def states(pods: int) -> tuple[State, ...]:
    return (State("no worker pods", 0, {}),
            State("HTTP probes (default)", pods, {}),
            State("exec probes", pods, EXEC_PROBES),
            State("no probes", pods, {"enabled": False}))


def busy_and_total() -> tuple[int, int]:
    """The machine's CPU ticks: busy (all but idle and iowait) and total."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total


def cpu_percent(seconds: float) -> float:
    """Busy time over ``seconds``, in % of one core."""
    busy0, total0 = busy_and_total()
    time.sleep(seconds)
    busy1, total1 = busy_and_total()
    return 100.0 * CORES * (busy1 - busy0) / (total1 - total0)


def manifest(image: str, broker: str, state: State) -> dict[str, Any]:
    pool = {"name": POOL, "queues": [POOL], "concurrency": 2, "minReplicas": state.pods,
            "maxReplicas": max(state.pods, 1), "autoscaling": {"enabled": False}}
    body = metamapper(NAMESPACE, NAME, broker, [pool])
    body["spec"].update(image=image, probes=state.probes,
                        celery={"settings": {"imports": [MODULE]}})
    return body


def readiness_kind(probe: dict[str, Any] | None) -> str | None:
    return next((kind for kind in ("httpGet", "exec") if kind in (probe or {})), None)


def settled(kube: Cluster, state: State) -> bool:
    """Every pod of the pool runs the state's kind of readiness probe and is Ready (or just
    Running, without one), and no other pod is left."""
    pods = json.loads(kube.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json"))["items"]
    template = expected_readiness(state)

    def up(pod: dict[str, Any]) -> bool:
        if pod["metadata"].get("deletionTimestamp") or pod["status"].get("phase") != "Running":
            return False
        if readiness_kind(pod["spec"]["containers"][0].get("readinessProbe")) != template:
            return False
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        return template is None or conditions.get("Ready") == "True"

    return len(pods) == state.pods and all(up(pod) for pod in pods)


def expected_readiness(state: State) -> str | None:
    """The kind of readiness probe the state's pods get."""
    if "workerReadiness" in state.probes:
        return readiness_kind(state.probes["workerReadiness"])
    return readiness_kind(WORKER_READINESS) if state.probes.get("enabled", True) else None


def measure(kube: Cluster, image: str, broker: str, chosen: tuple[State, ...], seconds: float
            ) -> Iterator[tuple[State, float]]:
    for state in chosen:
        kube.apply([manifest(image, broker, state)])
        wait_until(partial(settled, kube, state), 600, f"the pool in state {state.label!r}",
                   interval=2)
        time.sleep(SETTLE_SECONDS)
        say(f"measuring {state.label} for {seconds:g} s ...")
        yield state, cpu_percent(seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=14, help="idle worker pods")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured per state")
    args = parser.parse_args(argv)
    chosen = states(args.pods)
    with tempfile.TemporaryDirectory(prefix="bench-probes-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        kube = stack.enter_context(cluster(root / "cluster", node=True))
        assert kube.images is not None
        broker = stack.enter_context(redis_server(root / "redis"))
        kube.apply([namespace_manifest(NAMESPACE)])
        stack.enter_context(operator(kube, root / "operator.log", "--poll-interval", "2",
                                     "--namespace", NAMESPACE))
        figures = list(measure(kube, kube.images.workload, broker, chosen, args.seconds))
    base = figures[0][1]
    print(f"\n{args.pods} idle worker pods (concurrency 2, Redis broker), the machine's CPU "
          f"over {args.seconds:g} s per state ({CORES} cores)")
    print_table(["state", "pods", "CPU % of a core", "over no pods", "per pod"],
                [[state.label, state.pods, f"{cpu:.1f}", f"{cpu - base:.1f}",
                  f"{(cpu - base) / state.pods:.2f}" if state.pods else "-"]
                 for state, cpu in figures])


if __name__ == "__main__":
    main()
