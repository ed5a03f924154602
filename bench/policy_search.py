"""Search the pool's scale-down settings in the policy model for defaults that meet the
trace goal on every trace: no cluster, minutes of CPU.

Every combination of the settings a pool sets in the CRD and that decide how it shrinks or
how it is sized (``scaleDownStabilizationSeconds``, ``scaleDownPercentile``,
``scaleDownStepPercent``, ``panicWindowSeconds``, ``targetWaitSeconds``: ``--window``,
``--percentile``, ``--step``, ``--panic``, ``--target-wait``, each a comma-separated list;
the rest at the CRD's defaults) is simulated as ``bench/policy_simulation.py`` simulates
ours (the replay's pool, pods' starts and head start as there, means over ``--phases``
phases), on every trace, and compared with KEDA-like **as measured on the node**
(:data:`MEASURED`, the latest replay of each trace: the model's KEDA-like does not
reproduce it, its p95 depends on its 15 s sync's phase against the rows). The goal: our
p95 wait at most 0.5x KEDA-like's at most 0.8x its worker-seconds; ``--bias TRACE=S``
subtracts S seconds from our modelled p95 wait on that trace (what the model is known to
overstate it by).

It prints:

* the **floors**: per trace, our p95 wait with a pool that never shrinks once it has grown
  (the best any setting can do at this maximum: what is left is the pods' start);
* the **best candidates**: the combinations whose worst margin (the largest of every
  trace's wait ratio / 0.5 and worker-seconds ratio / 0.8; at most 1 meets the goal) is
  smallest, with the CRD's defaults for comparison;
* those candidates again at ``--seeds`` other draws of the pods' starts (the mean and the
  range of their means).

Usage::

    python bench/policy_search.py [--trace bench/bursty-trace.csv --trace ...]
                                  [--window 30,45,60,75,90,120] [--percentile 50,75,90,100]
                                  [--step 10,25,50,100] [--panic 0,6,20,60]
                                  [--target-wait 0,1,2,4] [--phases 4] [--seeds 5]
                                  [--best 8] [--bias bursty=2.9]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from _common import print_table
from _traces import Trace, load
from metamapper_operator.model import Autoscaling
from policy_simulation import (
    HEAD_START,
    OURS,
    POLL,
    TAIL,
    WAIT_GOAL,
    WORKER_SECONDS_GOAL,
    Configuration,
    Outcome,
    Startup,
    Timing,
    ours,
    replay_pool,
    run,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Measured:
    """KEDA-like's p95 wait and worker-seconds on one trace, as the node measured them."""

    p95_wait: float
    worker_seconds: float


#: The latest replay of each trace on the node (docs/benchmarks/index.md, "Every trace").
MEASURED = {"beat": Measured(10.6, 3195), "bursty": Measured(14.0, 1772),
            "ramp": Measured(3.1, 1364), "waves": Measured(19.6, 3560)}
#: A pool that never shrinks once it has grown.
NEVER_SHRINKS = Autoscaling(scale_down_stabilization_seconds=10**9, scale_down_percentile=100,
                            panic_window_seconds=0)


@dataclass(frozen=True)
class Settings:
    """One combination searched."""

    window: int
    percentile: int
    step: int
    panic: int
    target_wait: float

    def autoscaling(self) -> Autoscaling:
        return replace(Autoscaling(), scale_down_stabilization_seconds=self.window,
                       scale_down_percentile=self.percentile,
                       scale_down_step_percent=self.step, panic_window_seconds=self.panic,
                       target_wait_seconds=self.target_wait)

    @staticmethod
    def of(auto: Autoscaling) -> Settings:
        return Settings(auto.scale_down_stabilization_seconds, auto.scale_down_percentile,
                        auto.scale_down_step_percent, auto.panic_window_seconds,
                        auto.target_wait_seconds)

    def __str__(self) -> str:
        return (f"window {self.window}, p{self.percentile}, step {self.step} %, "
                f"panic {self.panic}, wait {self.target_wait:g}")


def outcome(trace: Trace, auto: Autoscaling, phases: int, seed: int = 0) -> Outcome:
    """Ours on ``trace`` with ``auto``: the mean over ``phases`` phases, seeded from
    ``seed`` as ``policy_simulation.py --seed`` seeds them."""
    pool = replay_pool(auto)
    config = Configuration(OURS, lambda: ours(pool),
                           tuple(Timing(POLL, head_start=HEAD_START).spread(phases)))
    return run(trace.rows, config, Startup(), TAIL, seed)


@dataclass(frozen=True)
class Scored:
    """One combination's outcome on every trace, against KEDA-like as measured."""

    settings: Settings
    outcomes: Mapping[str, Outcome]
    bias: Mapping[str, float]

    def ratios(self, trace: str) -> tuple[float, float]:
        modelled, keda = self.outcomes[trace], MEASURED[trace]
        return ((modelled.p95_wait - self.bias.get(trace, 0.0)) / keda.p95_wait,
                modelled.worker_seconds / keda.worker_seconds)

    @property
    def margin(self) -> float:
        """The worst of every trace's ratio to its goal (at most 1: met everywhere)."""
        return max(max(wait / WAIT_GOAL, seconds / WORKER_SECONDS_GOAL)
                   for wait, seconds in map(self.ratios, self.outcomes))


def score(settings: Settings, traces: Sequence[Trace], phases: int,
          bias: Mapping[str, float], seed: int = 0) -> Scored:
    auto = settings.autoscaling()
    return Scored(settings, {t.name: outcome(t, auto, phases, seed) for t in traces}, bias)


def cells(scored: Scored) -> list[str]:
    out = []
    for name, modelled in scored.outcomes.items():
        wait, seconds = scored.ratios(name)
        out.append(f"{modelled.p95_wait:.1f} s / {modelled.worker_seconds:.0f}: "
                   f"{wait:.2f}x, {seconds:.2f}x")
    return out


def figures(values: Sequence[float], digits: int) -> str:
    """The mean of ``values`` and their range."""
    return (f"{statistics.fmean(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def numbers(kind: Callable[[str], T]) -> Callable[[str], list[T]]:
    """A comma-separated list of ``kind``, for argparse."""
    return lambda text: [kind(item) for item in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, action="append",
                        help="a trace (CSV) named in MEASURED; again for more (default: "
                             "every bench/*-trace.csv but beat, which no policy capped at 8 "
                             "pods meets)")
    parser.add_argument("--window", type=numbers(int), default=[30, 45, 60, 75, 90, 120])
    parser.add_argument("--percentile", type=numbers(int), default=[50, 75, 90, 100])
    parser.add_argument("--step", type=numbers(int), default=[10, 25, 50, 100])
    parser.add_argument("--panic", type=numbers(int), default=[0, 6, 20, 60])
    parser.add_argument("--target-wait", type=numbers(float), default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--phases", type=int, default=4,
                        help="phases of the decisions per combination (default 4)")
    parser.add_argument("--seeds", type=int, default=5,
                        help="draws of the pods' starts the best are simulated at again, "
                             "each over 8 phases (default 5)")
    parser.add_argument("--best", type=int, default=8)
    parser.add_argument("--bias", action="append", default=[],
                        help="TRACE=SECONDS: what the model overstates our p95 wait by there")
    args = parser.parse_args(argv)
    traces = [t for t in load(args.trace) if args.trace or t.name != "beat"]
    bias = {name: float(seconds)
            for name, _, seconds in (item.partition("=") for item in args.bias)}

    floors = [(t.name, f"{outcome(t, NEVER_SHRINKS, 8).p95_wait:.1f}",
               f"{WAIT_GOAL * MEASURED[t.name].p95_wait:.1f}") for t in traces]
    print("never shrinking once grown: our p95 wait (s), and the goal's")
    print_table(["trace", "p95 wait", "goal"], floors)

    grid = [Settings(*combination) for combination in itertools.product(
        args.window, args.percentile, args.step, args.panic, args.target_wait)]
    defaults = Settings.of(Autoscaling())
    ranked = sorted((score(s, traces, args.phases, bias) for s in {*grid, defaults}),
                    key=lambda scored: scored.margin)
    met = sum(scored.margin <= 1 for scored in ranked)
    best = ranked[:args.best]
    best += [s for s in ranked[args.best:] if s.settings == defaults]
    print(f"\n{len(ranked)} combinations, {met} meet the goal on every trace "
          f"(wait / worker-seconds: ratios to KEDA-like as measured, {args.phases} phases)")
    print_table(["settings", "margin", *(t.name for t in traces)],
                [(("defaults: " if s.settings == defaults else "") + str(s.settings),
                  f"{s.margin:.2f}", *cells(s)) for s in best])

    print(f"\nthe same at {args.seeds} draws of the pods' starts, 8 phases each: the mean "
          "of their p95 waits (s) and margins, and their range")
    rows = []
    for candidate in best:
        draws = [score(candidate.settings, traces, 8, bias, seed=8 * n)
                 for n in range(args.seeds)]
        rows.append((str(candidate.settings), figures([d.margin for d in draws], 2),
                     *(figures([d.outcomes[t.name].p95_wait for d in draws], 1)
                       for t in traces)))
    print_table(["settings", "margin", *(t.name for t in traces)], rows)
    print("(a simulation, not a measurement: see bench/policy_simulation.py)")


if __name__ == "__main__":
    main()
