"""Simulate the scaling policy on traces, beside a KEDA-like HPA: no cluster, seconds of CPU.

A rough model, to compare settings before the real replay (``bench/trace_replay.py``)
measures them: tasks arrive as a trace says (rows ``offset_seconds,tasks,task_seconds``,
as ``trace_replay.py`` reads them), wait in one FIFO queue and run ``task_seconds`` each on
a pod's ``concurrency`` slots (each worker process reserves one message: the worker's
prefetch of 1 with late acks); a pod is ready ``--start`` seconds after it is asked for.
The configurations are the replay's:

* **ours**: the policy and the service-time sizing (``autoscale/policy.py``,
  ``autoscale/latency.py``) on the replay's pool (``trace_replay.pool_spec``, parsed as the
  operator parses it), every ``--poll`` seconds, from the backlog with tasks in flight; a
  scale-down drains: the pods to remove take no new task, are seen idle at a decision,
  given their deletion cost, and go at the next (``autoscale/shrink.py``);
* **ours, previous**: the same with the defaults before the steps and the service-time
  sizing (the window's maximum, one step, no panic window, the backlog target alone);
* **KEDA-like**: ``bench/_hpa.py``'s model of the HPA over KEDA's Redis scaler (the
  waiting messages only, a 300 s window); removed pods stop counting at once;
* **fixed at max**: the maximum all along.

When a configuration decides matters as much as how: a burst waits for the next decision.
Our operator polls at a fixed rate from its own start, at any phase of the trace, so ours
is simulated at ``--phases`` phases spread over its interval and its figures are their
means. The HPA model of the replay syncs 15 s after it starts, which is just before the
trace starts (so just *before* every row at a multiple of 15 s), and 15 s after the end
of each sync, so a sync that scales (a ``kubectl scale``, ``--hpa-scale-seconds``) moves
the later ones (0 by default: the replay's run of the bursty trace, KEDA-like 13.2 s and
1681 worker-seconds at a peak of 5 pods, is what 0 gives, 13.8 s and 1754; a drift past
the sending of the 60 s row gives 8 pods and about 2700): KEDA-like is simulated so
(``replay``), and also at ``--phases`` phases
spread over 15 s (``any phase``: their means), what an HPA not started with the trace
would give. The goal (our p95 wait at most 0.5x KEDA-like's at most 0.8x its
worker-seconds) is judged against both.

Worker-seconds are the ready pods integrated over the trace plus ``--tail`` seconds; a
wait is a task's start minus its arrival. The traces are the replay's: every
``bench/*-trace.csv`` (the bursty trace, Metamapper's beat, waves of 30 three-second tasks
every 70 s over a trickle, a slow ramp with noise: ``bench/_traces.py``), or the
``--trace``s given.

Usage::

    python bench/policy_simulation.py [--trace bench/bursty-trace.csv --trace ...]
                                      [--start 4] [--poll 2] [--tail 330] [--phases 8]
                                      [--hpa-scale-seconds 0]
"""

from __future__ import annotations

import argparse
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from _common import percentile, print_table
from _hpa import SYNC_SECONDS, Behaviour, Hpa
from _traces import Row, load
from metamapper_operator.autoscale.latency import Sample, Throughput, for_wait, observe
from metamapper_operator.autoscale.policy import Bounds, History, decide
from metamapper_operator.model import Autoscaling, Pool, parse
from trace_replay import CONCURRENCY, FIXED, KEDA, MAX_REPLICAS, OURS, configs, pool_spec

TICK = 0.25        # seconds per simulation step
# The defaults before the steps and the service-time sizing.
PREVIOUS = Autoscaling(scale_down_percentile=100, scale_down_step_percent=100,
                       panic_window_seconds=0, target_wait_seconds=0.0)
WAIT_GOAL, WORKER_SECONDS_GOAL = 0.5, 0.8   # as trace_replay.py judges them


@dataclass
class Pod:
    ready_at: float
    running: list[float] = field(default_factory=list)   # when each of its tasks ends
    draining: bool = False
    drained: bool = False    # seen idle while draining: its deletion cost is set


@dataclass(frozen=True)
class Outcome:
    p95_wait: float
    worker_seconds: float

    @staticmethod
    def mean(outcomes: Sequence[Outcome]) -> Outcome:
        return Outcome(statistics.fmean(o.p95_wait for o in outcomes),
                       statistics.fmean(o.worker_seconds for o in outcomes))


@dataclass(frozen=True)
class Timing:
    """When a configuration decides: first at ``phase`` seconds into the trace, then every
    ``interval`` seconds, and ``drift`` seconds later after each decision that resized
    (the HPA model waits its 15 s from the end of its ``kubectl scale``)."""

    interval: float
    phase: float = 0.0
    drift: float = 0.0

    def spread(self, count: int) -> list[Timing]:
        """``count`` phases spread evenly over the interval, at whole ticks."""
        return [replace(self, phase=round(n * self.interval / count / TICK) * TICK)
                for n in range(count)]


Decider = Callable[[int, int, int, int, float], int]
"""(pods, ready pods, waiting, in flight, now) -> the size wanted."""


def replay_pool(autoscaling: Autoscaling | None = None) -> Pool:
    """The replay's pool of our defaults, as the operator parses it (``autoscaling``
    instead of what it parses to, when given)."""
    ours = next(config for config in configs(MAX_REPLICAS, None, 2.0, "simulation")
                if config.label == OURS)
    (pool,) = parse({"metadata": {"namespace": ours.namespace, "name": "simulation"},
                     "spec": {"image": "worker", "broker": {"url": "redis://broker:6379/0"},
                              "scheduler": {"enabled": False},
                              "pools": [pool_spec(ours, MAX_REPLICAS)]}}).pools
    return pool if autoscaling is None else replace(pool, autoscaling=autoscaling)


def ours(pool: Pool) -> Decider:
    """Our policy and service-time sizing, as the autoscaling loop calls them."""
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


def fixed() -> Decider:
    return lambda pods, ready, waiting, in_flight, now: MAX_REPLICAS


def simulate(trace: Sequence[Row], decider: Decider, timing: Timing, drains: bool,
             start: float, tail: float, initial: int = 1) -> Outcome:
    arrivals = deque(sorted((row.offset, row.seconds)
                            for row in trace for _ in range(row.tasks)))
    waiting: deque[tuple[float, float]] = deque()
    pods, waits, worker_seconds = [Pod(ready_at=0.0) for _ in range(initial)], [], 0.0
    horizon, now, next_decision = trace[-1].offset + tail, 0.0, timing.phase
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
            next_decision += timing.interval
            if drains:   # a drained pod goes a decision after it was seen idle
                pods = [pod for pod in pods if not pod.drained]
                for pod in pods:
                    pod.drained = pod.draining and not pod.running
            ready = sum(pod.ready_at <= now for pod in pods)
            wanted = decider(len(pods), ready, len(waiting),
                             sum(len(pod.running) for pod in pods), now)
            if wanted != len(pods):
                next_decision += timing.drift
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
            pod.draining = pod.drained = False
            staying.append(pod)
    pods = [*pods, *(Pod(ready_at) for _ in range(wanted - len(staying)))]
    staying = [pod for pod in pods if not pod.draining]
    extra = sorted(staying, key=lambda pod: (-pod.ready_at, len(pod.running)))
    for pod in extra[:max(0, len(staying) - wanted)]:
        pod.draining = True
    return pods if drains else [pod for pod in pods if not pod.draining]


@dataclass(frozen=True)
class Configuration:
    label: str
    make: Callable[[], Decider]
    timings: tuple[Timing, ...]    # the figures are the means over these
    drains: bool = True
    initial: int = 1


KEDA_REPLAY, KEDA_ANY = f"{KEDA} (replay)", f"{KEDA} (any phase)"
PREVIOUS_LABEL = "ours, previous"


def configurations(poll: float, phases: int, hpa_scale_seconds: float
                   ) -> tuple[Configuration, ...]:
    ours_timings = tuple(Timing(poll).spread(phases))
    hpa = Timing(SYNC_SECONDS, phase=SYNC_SECONDS - TICK, drift=hpa_scale_seconds)
    return (
        Configuration(OURS, lambda: ours(replay_pool()), ours_timings),
        Configuration(PREVIOUS_LABEL, lambda: ours(replay_pool(PREVIOUS)), ours_timings),
        Configuration(KEDA_REPLAY, keda_like, (hpa,), drains=False),
        Configuration(KEDA_ANY, keda_like, tuple(hpa.spread(phases)), drains=False),
        Configuration(FIXED, fixed, (Timing(poll),), initial=MAX_REPLICAS),
    )


def run(trace: Sequence[Row], config: Configuration, start: float, tail: float) -> Outcome:
    return Outcome.mean([simulate(trace, config.make(), timing, config.drains, start, tail,
                                  config.initial) for timing in config.timings])


def times(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def verdict(ours: Outcome, keda: Outcome) -> str:
    missed = []
    if not ours.p95_wait <= WAIT_GOAL * keda.p95_wait:
        missed.append("wait")
    if not ours.worker_seconds <= WORKER_SECONDS_GOAL * keda.worker_seconds:
        missed.append("worker-s")
    return f"no: {', '.join(missed)}" if missed else "yes"


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
    parser.add_argument("--phases", type=int, default=8,
                        help="phases of the decisions simulated and averaged (default 8)")
    parser.add_argument("--hpa-scale-seconds", type=float, default=0.0,
                        help="how much later the replay's HPA model syncs after a sync that "
                             "scaled (its kubectl call; default 0)")
    args = parser.parse_args(argv)
    chosen = configurations(args.poll, args.phases, args.hpa_scale_seconds)
    table, goals = [], []
    for trace in load(args.trace):
        outcomes = {config.label: run(trace.rows, config, args.start, args.tail)
                    for config in chosen}
        replayed, anywhen = outcomes[KEDA_REPLAY], outcomes[KEDA_ANY]
        for label, outcome in outcomes.items():
            table.append((trace.name, label, f"{outcome.p95_wait:.1f}",
                          f"{outcome.worker_seconds:.0f}",
                          times(outcome.p95_wait, replayed.p95_wait),
                          times(outcome.worker_seconds, replayed.worker_seconds),
                          times(outcome.p95_wait, anywhen.p95_wait),
                          times(outcome.worker_seconds, anywhen.worker_seconds)))
        goals.append((trace.name, verdict(outcomes[OURS], replayed),
                      verdict(outcomes[OURS], anywhen)))
    print_table(["trace", "configuration", "p95 wait s", "worker-s", "wait vs replay's",
                 "worker-s vs replay's", "wait vs any phase", "worker-s vs any phase"],
                table)
    print(f"\ngoal met (ours at most {WAIT_GOAL:g}x {KEDA}'s p95 wait at most "
          f"{WORKER_SECONDS_GOAL:g}x its worker-seconds)")
    print_table(["trace", f"vs {KEDA_REPLAY}", f"vs {KEDA_ANY}"], goals)
    print(f"(a simulation, not a measurement: pods ready {args.start:g} s after they are "
          f"asked for; means over {args.phases} phases of the decisions)")


if __name__ == "__main__":
    main()
