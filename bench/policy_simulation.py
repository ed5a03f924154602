"""Simulate the scaling policy on traces, beside a KEDA-like HPA: no cluster, seconds of CPU.

A rough model, to compare settings before the real replay (``bench/trace_replay.py``)
measures them: tasks arrive as a trace says (rows ``offset_seconds,tasks,task_seconds``,
as ``trace_replay.py`` reads them), wait in one FIFO queue and run ``task_seconds`` each on
a pod's ``concurrency`` slots (each worker process reserves one message: the worker's
prefetch of 1 with late acks). How pods start and when the operators begin to decide
are the replay's on the node, measured in its first run of every trace (7 December 2026,
docs/benchmarks/index.md, "Every trace"):

* a pod is Ready ``--start`` seconds after it is asked for, drawn evenly from 6.5 to
  12.5 s by default: binding to Ready in the apiserver's audit log of that run (4 s
  before, which the run did not bear out);
* its worker takes tasks ``--ready-lag`` seconds before it counts Ready, drawn evenly
  from 0.5 to 2.5 s by default: the readiness probe (first 2 s after the container
  starts, then every 5 s, ``builders.py``) sees the worker consuming only at its next
  run, up to 2.5 s later in that run. Waits count from when a worker takes a task,
  worker-seconds from Ready (as the replay counts them);
* our operators decide from ``--head-start`` seconds before the trace, 16 s by default:
  the replay starts them and waits for every pool at its minimum before the trace's
  first row, so their decision history (and its scale-down window) had been filling for
  about 16 s when the trace began; a model that began it with the trace held the pool
  through the first window, where the run shrank it before the bursty trace's 60 s
  burst. With these three the model gives about that run's figures for ours on the
  bursty trace (``scaleDownPercentile`` 75 in that run): 11.5 s p95 wait and 946
  worker-seconds against the measured 12.0 s and 916 (with pods ready in 4 s and no head
  start it gave 6.0 s).

The draws are seeded, so a run's figures repeat (``--seed`` gives other draws: how much a
figure owes to them). The configurations are the replay's, at its maximum of pods or
``--max-replicas``, all the same:

* **ours**: the policy and the service-time sizing (``autoscale/policy.py``,
  ``autoscale/latency.py``) on the replay's pool (``trace_replay.pool_spec``, parsed as the
  operator parses it), every ``--poll`` seconds, from the backlog with tasks in flight; a
  scale-down drains: the pods to remove take no new task, are seen idle at a decision,
  given their deletion cost, and go at the next (``autoscale/shrink.py``); ``--window``
  is its scale-down window, as the replay's ``--window`` gives it;
* **ours, beat warm-up**: the same, on the fleet as production runs it beside the beat
  the beat trace compresses (:func:`production_twin`: its scheduler on, a metastore
  named, its pool consuming every queue of the default beat), with the floor of the
  beat-aware warm-up the operator derives from it (``autoscale/waves.py``'s ``beat_of``
  and ``warming``, as the autoscaling loop applies them). The default beat's entries that
  fire every minute keep that pool warm at all times, at ``warmUp.replicas``: the CRD's
  default, 1, is the replay's ``minReplicas``, so the warm-up never raises the pool and
  the figures are ours (``--warm-up-replicas`` gives another, which is then a minimum at
  all times: the replay sends an hour of beat in 180 s, the crontabs it warms for follow
  the wall clock, so none of the trace's waves is warmed for as such);
* **ours, previous**: the same with the defaults before the steps and the service-time
  sizing (the window's maximum, one step, no panic window, the backlog target alone), in
  the window ``--window`` gives too;
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
1681 worker-seconds at a peak of 5 pods, is what 0 gives with pods ready in 4 s, 13.8 s
and 1754; a drift past the sending of the 60 s row gives 8 pods and about 2700; with the
starts above it gives 18.0 s and 1728, where the first run of every trace measured 13.8 s
and 1745): KEDA-like is simulated so
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
                                      [--start 6.5-12.5] [--ready-lag 0.5-2.5]
                                      [--head-start 16] [--poll 2] [--tail 330]
                                      [--phases 8] [--hpa-scale-seconds 0]
                                      [--window SECONDS] [--warm-up-replicas N]
                                      [--max-replicas 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from _common import percentile, print_table
from _hpa import SYNC_SECONDS, Behaviour, Hpa
from _traces import Row, load
from metamapper_beat import DEFAULT_QUEUE, METASTORE_ENV, ROUTES
from metamapper_operator.autoscale import waves
from metamapper_operator.autoscale.latency import Sample, Throughput, for_wait, observe
from metamapper_operator.autoscale.policy import Bounds, History, decide
from metamapper_operator.model import Autoscaling, Fleet, Pool, parse
from trace_replay import CONCURRENCY, FIXED, KEDA, MAX_REPLICAS, OURS, configs, pool_spec

TICK = 0.25        # seconds per simulation step
#: The defaults of ``--head-start``, ``--poll`` and ``--tail`` (seconds).
HEAD_START, POLL, TAIL = 16.0, 2.0, 330.0
# The defaults before the steps and the service-time sizing.
PREVIOUS = Autoscaling(scale_down_percentile=100, scale_down_step_percent=100,
                       panic_window_seconds=0, target_wait_seconds=0.0)
WAIT_GOAL, WORKER_SECONDS_GOAL = 0.5, 0.8   # as trace_replay.py judges them


@dataclass(frozen=True)
class Spread:
    """Seconds drawn evenly from ``low`` to ``high``."""

    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)

    @staticmethod
    def parse(text: str) -> Spread:
        """``"4"`` (always 4 s) or ``"6.5-12.5"``."""
        low, _, high = text.partition("-")
        spread = Spread(float(low), float(high or low))
        if not 0 <= spread.low <= spread.high:
            raise ValueError(f"not a range of seconds: {text!r}")
        return spread

    def __str__(self) -> str:
        return f"{self.low:g}" if self.low == self.high else f"{self.low:g} to {self.high:g}"


@dataclass(frozen=True)
class Startup:
    """How a pod starts: Ready ``ready`` seconds after it is asked for, its worker taking
    tasks ``lag`` seconds before that (the module's docstring says where the defaults
    come from)."""

    ready: Spread = Spread(6.5, 12.5)
    lag: Spread = Spread(0.5, 2.5)


@dataclass
class Pod:
    ready_at: float
    takes_at: float    # its worker takes tasks from then on, Ready or not
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
    """When a configuration decides: first at ``phase`` seconds into the trace, or
    ``head_start`` seconds before that (its decision history begins then), then every
    ``interval`` seconds, and ``drift`` seconds later after each decision that resized
    (the HPA model waits its 15 s from the end of its ``kubectl scale``)."""

    interval: float
    phase: float = 0.0
    drift: float = 0.0
    head_start: float = 0.0

    def spread(self, count: int) -> list[Timing]:
        """``count`` phases spread evenly over the interval, at whole ticks."""
        return [replace(self, phase=round(n * self.interval / count / TICK) * TICK)
                for n in range(count)]


Decider = Callable[[int, int, int, int, float], int]
"""(pods, ready pods, waiting, in flight, now) -> the size wanted."""


def replay_spec(window: int | None = None, max_replicas: int = MAX_REPLICAS
                ) -> dict[str, Any]:
    """The replay's Metamapper of our defaults (``window``, ``max_replicas``: its
    ``--window``, ``--max-replicas``): no scheduler, one pool."""
    ours = next(config for config in configs(max_replicas, window, 2.0, "simulation")
                if config.label == OURS)
    return {"metadata": {"namespace": ours.namespace, "name": "simulation"},
            "spec": {"image": "worker", "broker": {"url": "redis://broker:6379/0"},
                     "scheduler": {"enabled": False},
                     "pools": [pool_spec(ours, max_replicas)]}}


def replay_pool(autoscaling: Autoscaling | None = None, window: int | None = None,
                max_replicas: int = MAX_REPLICAS) -> Pool:
    """The replay's pool of our defaults, as the operator parses it (``autoscaling``
    instead of what it parses to, when given)."""
    (pool,) = parse(replay_spec(window, max_replicas)).pools
    return pool if autoscaling is None else replace(pool, autoscaling=autoscaling)


#: Every queue Metamapper's default beat sends to: upstream's routes and the default queue.
BEAT_QUEUES = tuple(dict.fromkeys((DEFAULT_QUEUE, *(queue for _, queue in ROUTES))))


def production_twin(window: int | None = None, warm_up_replicas: int | None = None,
                    scheduler: bool = True, max_replicas: int = MAX_REPLICAS) -> Fleet:
    """The replay's fleet as production runs it beside the beat the beat trace compresses,
    as the operator parses it: its scheduler on (the CRD's default; ``scheduler`` False
    turns it off), a metastore named (without one beat keeps only its heartbeat, on the
    default queue), its pool consuming every queue of :data:`BEAT_QUEUES` (the trace is
    what such a pool sees) with the CRD's ``warmUp`` (``warm_up_replicas`` instead of
    its ``replicas``, when given); the rest is the replay's."""
    body = replay_spec(window, max_replicas)
    spec = body["spec"]
    (pool,) = spec["pools"]
    pool["queues"] = list(BEAT_QUEUES)
    if warm_up_replicas is not None:
        pool["autoscaling"]["warmUp"] = {"replicas": warm_up_replicas}
    spec["scheduler"] = {} if scheduler else {"enabled": False}
    host = next(iter(METASTORE_ENV))
    spec["env"] = [{"name": host, "value": METASTORE_ENV[host]}]
    return parse(body)


#: When the simulated trace starts on the operator's clock. The default beat's entries
#: that fire every minute keep a warmed pool warm at any time (a test checks it), so the
#: time of day changes no figure of it.
CLOCK = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class BeatWarmUp:
    """A pool's warm-up before its fleet's beat, as the autoscaling loop evaluates it
    (``autoscale/waves.py``): the floor it raises the pool to ``now`` seconds into the
    trace, which starts at :data:`CLOCK`. Its lead is the operator's before it has
    measured a pod start (the default beat's floor does not depend on it)."""

    beat: waves.Beat
    pool: Pool
    lead: float

    @staticmethod
    def of(fleet: Fleet, poll: float) -> BeatWarmUp | None:
        """The warm-up of ``fleet``'s one pool; None when it has none (no beat, or off)."""
        beat = waves.beat_of(fleet)
        (pool,) = fleet.pools
        if beat is None or not pool.autoscaling.warm_up.enabled:
            return None
        return BeatWarmUp(beat, pool, waves.lead_seconds((), poll))

    def at(self, now: float) -> waves.Warming:
        pool = self.pool
        return waves.warming(self.beat, pool.queues,
                             min(pool.autoscaling.warm_up.replicas, pool.max_replicas),
                             CLOCK + datetime.timedelta(seconds=now), self.lead,
                             pool.min_replicas)


def ours(pool: Pool, warm_up: BeatWarmUp | None = None) -> Decider:
    """Our policy and service-time sizing, as the autoscaling loop calls them, with the
    floor of ``warm_up`` when given."""
    history, seen = History(), Throughput()

    def decider(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        nonlocal history, seen
        backlog = waiting + in_flight
        wait = pool.autoscaling.target_wait_seconds
        if wait:
            seen = observe(seen, Sample(now, backlog, ready, pool.concurrency))
        sized = for_wait(Bounds.of(pool), pool.concurrency, wait, seen)
        bounds = waves.raised(sized.bounds, warm_up.at(now) if warm_up else None)
        decision = decide(bounds, pods, backlog, now, history)
        history = decision.history
        return decision.replicas
    return decider


def keda_like(max_replicas: int = MAX_REPLICAS) -> Decider:
    hpa = Hpa(Behaviour(target=CONCURRENCY, min_replicas=1, max_replicas=max_replicas))

    def decider(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        return hpa.step(pods, waiting, now)
    return decider


def fixed(max_replicas: int = MAX_REPLICAS) -> Decider:
    return lambda pods, ready, waiting, in_flight, now: max_replicas


def simulate(trace: Sequence[Row], decider: Decider, timing: Timing, drains: bool,
             startup: Startup, tail: float, initial: int = 1, seed: int = 0) -> Outcome:
    """The trace served by ``decider``'s pods (``initial`` of them Ready from the trace's
    start, or from the first decision if earlier), pods' starts drawn from ``startup``
    seeded with ``seed``."""
    arrivals = deque(sorted((row.offset, row.seconds)
                            for row in trace for _ in range(row.tasks)))
    waiting: deque[tuple[float, float]] = deque()
    next_decision = timing.phase - timing.head_start
    rng, now = random.Random(seed), min(0.0, next_decision)
    pods = [Pod(ready_at=now, takes_at=now) for _ in range(initial)]
    waits: list[float] = []
    worker_seconds, horizon = 0.0, trace[-1].offset + tail
    while now < horizon:
        while arrivals and arrivals[0][0] <= now:
            waiting.append(arrivals.popleft())
        for pod in pods:
            pod.running = [end for end in pod.running if end > now]
            while pod.takes_at <= now and not pod.draining and waiting and (
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
            pods = resized(pods, wanted, partial(new_pod, now, startup, rng), drains)
        if now >= 0:
            worker_seconds += TICK * sum(pod.ready_at <= now for pod in pods)
        now += TICK
    return Outcome(percentile(waits, 95) if waits else 0.0, worker_seconds)


def new_pod(asked_at: float, startup: Startup, rng: random.Random) -> Pod:
    ready_at = asked_at + startup.ready.draw(rng)
    return Pod(ready_at, takes_at=max(asked_at, ready_at - startup.lag.draw(rng)))


def resized(pods: list[Pod], wanted: int, new: Callable[[], Pod], drains: bool) -> list[Pod]:
    """The pods once ``wanted`` is applied: draining ones taken back first, then ``new``
    ones; the pods to remove are the least busy (not ready first), drained when ``drains``,
    else removed at once."""
    staying = [pod for pod in pods if not pod.draining]
    for pod in pods:
        if pod.draining and len(staying) < wanted:
            pod.draining = pod.drained = False
            staying.append(pod)
    pods = [*pods, *(new() for _ in range(wanted - len(staying)))]
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
WARM_UP_LABEL = "ours, beat warm-up"


def configurations(poll: float, phases: int, hpa_scale_seconds: float, head_start: float,
                   window: int | None = None, warm_up_replicas: int | None = None,
                   max_replicas: int = MAX_REPLICAS) -> tuple[Configuration, ...]:
    """The replay's configurations, and ours as its production twin runs with the default
    beat's warm-up (:func:`production_twin`, ``warm_up_replicas`` its ``warmUp.replicas``
    when given); our operators decide from ``head_start`` seconds before the trace, the
    HPA model from its start (just before the trace); ``window`` is our scale-down window
    (the replay's ``--window``), ``max_replicas`` every configuration's maximum (the
    replay's ``--max-replicas``)."""
    ours_timings = tuple(Timing(poll, head_start=head_start).spread(phases))
    hpa = Timing(SYNC_SECONDS, phase=SYNC_SECONDS - TICK, drift=hpa_scale_seconds)
    previous = PREVIOUS if window is None else replace(
        PREVIOUS, scale_down_stabilization_seconds=window)
    twin = production_twin(window, warm_up_replicas, max_replicas=max_replicas)
    (twin_pool,) = twin.pools
    keda = partial(keda_like, max_replicas)
    return (
        Configuration(OURS, lambda: ours(replay_pool(window=window, max_replicas=max_replicas)),
                      ours_timings),
        Configuration(WARM_UP_LABEL, lambda: ours(twin_pool, BeatWarmUp.of(twin, poll)),
                      ours_timings),
        Configuration(PREVIOUS_LABEL,
                      lambda: ours(replay_pool(previous, max_replicas=max_replicas)),
                      ours_timings),
        Configuration(KEDA_REPLAY, keda, (hpa,), drains=False),
        Configuration(KEDA_ANY, keda, tuple(hpa.spread(phases)), drains=False),
        Configuration(FIXED, partial(fixed, max_replicas), (Timing(poll),),
                      initial=max_replicas),
    )


def run(trace: Sequence[Row], config: Configuration, startup: Startup, tail: float,
        seed: int = 0) -> Outcome:
    """The mean over the configuration's timings, each with its own seed: ``seed`` for the
    first, one more for each next."""
    return Outcome.mean([simulate(trace, config.make(), timing, config.drains, startup, tail,
                                  config.initial, seed + n)
                         for n, timing in enumerate(config.timings)])


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
    parser.add_argument("--start", type=Spread.parse, default=Startup().ready,
                        help="seconds from asking for a pod to its being Ready, one figure "
                             "or a range drawn from (default 6.5-12.5)")
    parser.add_argument("--ready-lag", type=Spread.parse, default=Startup().lag,
                        help="seconds a worker takes tasks before its pod counts Ready, one "
                             "figure or a range (default 0.5-2.5)")
    parser.add_argument("--head-start", type=float, default=HEAD_START,
                        help="seconds our operators decide before the trace begins "
                             "(default 16)")
    parser.add_argument("--poll", type=float, default=POLL,
                        help="our polling interval in seconds (default 2)")
    parser.add_argument("--tail", type=float, default=TAIL)
    parser.add_argument("--phases", type=int, default=8,
                        help="phases of the decisions simulated and averaged (default 8)")
    parser.add_argument("--hpa-scale-seconds", type=float, default=0.0,
                        help="how much later the replay's HPA model syncs after a sync that "
                             "scaled (its kubectl call; default 0)")
    parser.add_argument("--window", type=int, default=None,
                        help="our scale-down window in whole seconds, as the replay's "
                             "--window (default: the CRD's)")
    parser.add_argument("--warm-up-replicas", type=int, default=None,
                        help="warmUp.replicas of the production twin's pool (default: the "
                             "CRD's)")
    parser.add_argument("--max-replicas", type=int, default=MAX_REPLICAS,
                        help="every configuration's maximum (and the fixed fleet's size), "
                             f"as the replay's --max-replicas (default {MAX_REPLICAS})")
    parser.add_argument("--seed", type=int, default=0,
                        help="the pod starts' draws are seeded with this and the next "
                             "--phases - 1 figures, one per phase (default 0)")
    args = parser.parse_args(argv)
    chosen = configurations(args.poll, args.phases, args.hpa_scale_seconds, args.head_start,
                            args.window, args.warm_up_replicas, args.max_replicas)
    startup = Startup(args.start, args.ready_lag)
    table, goals = [], []
    for trace in load(args.trace):
        outcomes = {config.label: run(trace.rows, config, startup, args.tail, args.seed)
                    for config in chosen}
        replayed, anywhen = outcomes[KEDA_REPLAY], outcomes[KEDA_ANY]
        for label, outcome in outcomes.items():
            table.append((trace.name, label, f"{outcome.p95_wait:.1f}",
                          f"{outcome.worker_seconds:.0f}",
                          times(outcome.p95_wait, replayed.p95_wait),
                          times(outcome.worker_seconds, replayed.worker_seconds),
                          times(outcome.p95_wait, anywhen.p95_wait),
                          times(outcome.worker_seconds, anywhen.worker_seconds)))
        goals += [(trace.name, label, verdict(outcomes[label], replayed),
                   verdict(outcomes[label], anywhen)) for label in (OURS, WARM_UP_LABEL)]
    print_table(["trace", "configuration", "p95 wait s", "worker-s", "wait vs replay's",
                 "worker-s vs replay's", "wait vs any phase", "worker-s vs any phase"],
                table)
    print(f"\ngoal met (ours at most {WAIT_GOAL:g}x {KEDA}'s p95 wait at most "
          f"{WORKER_SECONDS_GOAL:g}x its worker-seconds)")
    print_table(["trace", "configuration", f"vs {KEDA_REPLAY}", f"vs {KEDA_ANY}"], goals)
    window = "the CRD's" if args.window is None else f"{args.window:g} s"
    print(f"(a simulation, not a measurement: pods Ready {args.start} s after they "
          f"are asked for, taking tasks {args.ready_lag} s before; our operators "
          f"deciding from {args.head_start:g} s before the trace; our scale-down window "
          f"{window}; at most {args.max_replicas} pods; means over {args.phases} phases "
          f"of the decisions, seeds from {args.seed})")


if __name__ == "__main__":
    main()
