"""Simulate the scaling policy on traces, beside a KEDA-like HPA: no cluster, seconds of CPU.

A rough model, to compare settings before the real replay (``bench/trace_replay.py``)
measures them: tasks arrive as a trace says (rows ``offset_seconds,tasks,task_seconds``,
as ``trace_replay.py`` reads them), wait in one FIFO queue and run ``task_seconds`` each on
a pod's ``concurrency`` slots; a pod is ready ``--start`` seconds after it is asked for.

* **ours**: the policy and the service-time sizing (``autoscale/policy.py``,
  ``autoscale/latency.py``) with the spec's defaults as the model gives them, every
  ``--poll`` seconds, from the backlog with tasks in flight; a scale-down drains: the pods
  to remove take no new task and go at the first decision after they are idle;
* **ours, previous**: the same with the defaults before the steps and the service-time
  sizing (the window's maximum, one step, no panic window, the backlog target alone);
* **KEDA-like**: ``bench/_hpa.py``'s model of the HPA over KEDA's Redis scaler (the
  waiting messages only, every 15 s, a 300 s window); removed pods stop counting at once.

Worker-seconds are the ready pods integrated over the trace plus ``--tail`` seconds; a
wait is a task's start minus its arrival. The traces are the replay's: every
``bench/*-trace.csv`` (the bursty trace, Metamapper's beat, waves of 30 three-second tasks
every 70 s over a trickle, a slow ramp with noise: ``bench/_traces.py``), or the
``--trace``s given.

Usage::

    python bench/policy_simulation.py [--trace bench/bursty-trace.csv --trace ...]
                                      [--start 4] [--poll 2] [--tail 330]
"""

from __future__ import annotations

import argparse
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _common import percentile, print_table
from _hpa import SYNC_SECONDS, Behaviour, Hpa
from _traces import Row, load
from metamapper_operator.autoscale.latency import Sample, Throughput, for_wait, observe
from metamapper_operator.autoscale.policy import Bounds, History, decide
from metamapper_operator.model import Autoscaling, Pool

TICK = 0.25        # seconds per simulation step
CONCURRENCY = 2    # as trace_replay.py's pool: concurrency 2, 1 to 8 pods, 2 per pod
MAX_REPLICAS = 8
# The defaults before the steps and the service-time sizing.
PREVIOUS = Autoscaling(scale_down_percentile=100, scale_down_step_percent=100,
                       panic_window_seconds=0, target_wait_seconds=0.0)


@dataclass
class Pod:
    ready_at: float
    running: list[float] = field(default_factory=list)   # when each of its tasks ends
    draining: bool = False


@dataclass(frozen=True)
class Outcome:
    p95_wait: float
    worker_seconds: float


Decider = Callable[[int, int, int, int, float], int]
"""(pods, ready pods, waiting, in flight, now) -> the size wanted."""


def ours(autoscaling: Autoscaling) -> Decider:
    """Our policy and service-time sizing, as the autoscaling loop calls them."""
    pool = Pool("default", ("default",), concurrency=CONCURRENCY, max_replicas=MAX_REPLICAS,
                autoscaling=autoscaling)
    history, seen = History(), Throughput()

    def decider(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        nonlocal history, seen
        backlog = waiting + in_flight
        wait = pool.autoscaling.target_wait_seconds
        if wait:
            seen = observe(seen, Sample(now, backlog, ready, pool.concurrency))
        sized = for_wait(Bounds.of(pool), pool.concurrency, wait, seen)
        decision = decide(sized.bounds, pods, backlog, now, history)
        history = decision.history
        return decision.replicas
    return decider


def keda_like() -> Decider:
    hpa = Hpa(Behaviour(target=CONCURRENCY, min_replicas=1, max_replicas=MAX_REPLICAS))

    def decider(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        return hpa.step(pods, waiting, now)
    return decider


def simulate(trace: Sequence[Row], decider: Decider, interval: float, drains: bool,
             start: float, tail: float) -> Outcome:
    arrivals = deque(sorted((row.offset, row.seconds)
                            for row in trace for _ in range(row.tasks)))
    waiting: deque[tuple[float, float]] = deque()
    pods, waits, worker_seconds = [Pod(ready_at=0.0)], [], 0.0
    horizon, now, next_decision = trace[-1].offset + tail, 0.0, 0.0
    while now < horizon:
        while arrivals and arrivals[0][0] <= now:
            waiting.append(arrivals.popleft())
        for pod in pods:
            pod.running = [end for end in pod.running if end > now]
            while pod.ready_at <= now and not pod.draining and waiting and (
                    len(pod.running) < CONCURRENCY):
                sent, seconds = waiting.popleft()
                waits.append(now - sent)
                pod.running.append(now + seconds)
        if now >= next_decision:
            next_decision += interval
            if drains:   # drained pods go at the decision after they are idle
                pods = [pod for pod in pods if not (pod.draining and not pod.running)]
            ready = sum(pod.ready_at <= now for pod in pods)
            wanted = decider(len(pods), ready, len(waiting),
                             sum(len(pod.running) for pod in pods), now)
            pods = resized(pods, wanted, now + start, drains)
        worker_seconds += TICK * sum(pod.ready_at <= now for pod in pods)
        now += TICK
    return Outcome(percentile(waits, 95) if waits else 0.0, worker_seconds)


def resized(pods: list[Pod], wanted: int, ready_at: float, drains: bool) -> list[Pod]:
    """The pods once ``wanted`` is applied: draining ones taken back first, new ones ready
    at ``ready_at``; the pods to remove are the least busy (not ready first), drained when
    ``drains``, else removed at once."""
    staying = [pod for pod in pods if not pod.draining]
    for pod in pods:
        if pod.draining and len(staying) < wanted:
            pod.draining = False
            staying.append(pod)
    pods = [*pods, *(Pod(ready_at) for _ in range(wanted - len(staying)))]
    staying = [pod for pod in pods if not pod.draining]
    extra = sorted(staying, key=lambda pod: (-pod.ready_at, len(pod.running)))
    for pod in extra[:max(0, len(staying) - wanted)]:
        pod.draining = True
    return pods if drains else [pod for pod in pods if not pod.draining]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, action="append",
                        help="a trace (CSV); give it again for more (default: every "
                             "bench/*-trace.csv)")
    parser.add_argument("--start", type=float, default=4.0,
                        help="seconds from asking for a pod to its being ready (default 4)")
    parser.add_argument("--poll", type=float, default=2.0,
                        help="our polling interval in seconds (default 2)")
    parser.add_argument("--tail", type=float, default=330.0)
    args = parser.parse_args(argv)
    configs: dict[str, tuple[Callable[[], Decider], float, bool]] = {
        "ours": (lambda: ours(Autoscaling()), args.poll, True),
        "ours, previous": (lambda: ours(PREVIOUS), args.poll, True),
        "KEDA-like": (keda_like, SYNC_SECONDS, False),
    }
    table = []
    for trace in load(args.trace):
        outcomes = {config: simulate(trace.rows, make(), interval, drains, args.start,
                                     args.tail)
                    for config, (make, interval, drains) in configs.items()}
        keda = outcomes["KEDA-like"]
        for config, outcome in outcomes.items():
            table.append((trace.name, config, f"{outcome.p95_wait:.1f}",
                          f"{outcome.worker_seconds:.0f}",
                          f"{outcome.p95_wait / keda.p95_wait:.2f}x"
                          if keda.p95_wait else "-",
                          f"{outcome.worker_seconds / keda.worker_seconds:.2f}x"))
    print_table(["trace", "configuration", "p95 wait s", "worker-s", "wait vs KEDA",
                 "worker-s vs KEDA"], table)
    print(f"(a simulation, not a measurement: pods ready {args.start:g} s after they are "
          "asked for)")


if __name__ == "__main__":
    main()
