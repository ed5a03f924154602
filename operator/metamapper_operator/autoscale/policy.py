"""The scaling policy: desired replicas from a pool's backlog. Pure; no I/O, no clock.

    desired = clamp(ceil((backlog + arrivals) / target), min, max)

where ``target`` is the backlog one pod takes (``targetBacklogPerReplica``, or what the
service time measured allows: see :mod:`latency`) and ``arrivals`` the messages expected
to arrive meanwhile (0 until measured), refined the way the HPA, KEDA, Knative and dask
refine it, and where they fall short for queues:

- activation: a pool at zero wakes only when the backlog exceeds ``activationBacklog``;
- scale-up is immediate (optionally at most ``maxScaleUpStep`` pods per step);
- panic: a backlog at least ``PANIC_RATIO`` times what the current pods take (a burst,
  even one the maximum caps, or a pool woken from zero) suspends every scale-down for
  ``panicWindowSeconds`` (Knative's panic mode): pods just started for a burst are not
  drained while they start;
- scale-down goes no lower than the recommendations of the last
  ``scaleDownStabilizationSeconds`` ask for at their ``scaleDownPercentile``, weighted by
  how long each was in force (100: their maximum, the HPA's stabilization window), and by
  at most ``scaleDownStepPercent`` of the current size per decision (at least one pod;
  dask's adaptive steps): a pool shrinks in steps, not in one cliff;
- to zero only after the backlog stayed at or below activation for
  ``scaleToZeroCooldownSeconds``;
- changes within ``tolerance`` of the current size are ignored;
- when the broker cannot be measured the pool holds its size (or rises to
  ``fallbackReplicas``): it is never scaled down because of an error.

History is seeded with the current size at the first observation, and while it is
shorter than the window the floor is its maximum (the seed included), so an operator that
restarts does not scale anything down for one window. A clock that went backwards (a
history from the future) is not trusted either: the history starts again as after a
restart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from metamapper_operator.model import Pool

# A backlog at least this many times what the current pods take is a jump (Knative's 200 %).
PANIC_RATIO = 2


@dataclass(frozen=True, kw_only=True, slots=True)
class Bounds:
    """A pool's autoscaling knobs, as the policy sees them. Left out, the scale-down ones
    give the plain policy (the window's maximum, in one step, no panic window); a pool's
    come from its spec (:meth:`of`), whose defaults are the model's."""

    min_replicas: int
    max_replicas: int
    target: float
    activation: int = 0
    stabilization_seconds: float = 60.0
    zero_cooldown_seconds: float = 300.0
    tolerance: float = 0.1
    max_step: int = 0
    fallback: int | None = None
    percentile: int = 100
    step_percent: int = 100
    panic_seconds: float = 0.0
    arrivals: float = 0.0    # messages expected to arrive within the wait (latency.py)

    @classmethod
    def of(cls, pool: Pool) -> Bounds:
        auto = pool.autoscaling
        return cls(min_replicas=pool.min_replicas, max_replicas=pool.max_replicas,
                   target=pool.target_per_replica, activation=auto.activation_backlog,
                   stabilization_seconds=auto.scale_down_stabilization_seconds,
                   zero_cooldown_seconds=auto.scale_to_zero_cooldown_seconds,
                   tolerance=auto.tolerance, max_step=auto.max_scale_up_step,
                   fallback=auto.fallback_replicas,
                   percentile=auto.scale_down_percentile,
                   step_percent=auto.scale_down_step_percent,
                   panic_seconds=auto.panic_window_seconds)

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


class Recommendation(NamedTuple):
    """The size the backlog asked for at one time (before stabilization); it is in force
    until the next one."""

    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class History:
    """What the policy remembers of a pool between decisions: the recommendations of the
    window (and the last one before it, in force at its start), oldest first."""

    recommendations: tuple[Recommendation, ...] = ()
    last_active: float | None = None                      # last time backlog > activation
    panic_until: float | None = None                      # no scale-down before then


@dataclass(frozen=True, slots=True)
class Wanted:
    """The size a backlog alone asks for, and why (before stabilization)."""

    replicas: int
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: str
    history: History


def figure(value: float) -> str:
    """A figure for a reason: at most two decimals, none when whole."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def recommend(bounds: Bounds, current: int, backlog: int) -> Wanted:
    """The size this backlog alone asks for, before stabilization."""
    if backlog <= bounds.activation:
        return Wanted(bounds.min_replicas, f"backlog {backlog}: idle")
    load = backlog + bounds.arrivals
    shown = f"backlog {backlog}" + (f" + {figure(bounds.arrivals)} arriving"
                                    if bounds.arrivals else "")
    wanted = max(1, math.ceil(load / bounds.target))
    if current > 0 and abs(load / (bounds.target * current) - 1) <= bounds.tolerance:
        return Wanted(bounds.clamp(current), f"{shown} within tolerance of {current} pods")
    return Wanted(bounds.clamp(wanted), f"{shown} / {figure(bounds.target)} per pod "
                                        f"= {wanted} pods")


def floor_of(recommendations: Sequence[Recommendation], start: float, now: float,
             percentile: int) -> int:
    """The highest size the recommendations asked for during more than ``100 -
    percentile`` % of the time from ``start`` to ``now`` (each in force until the next;
    100: their maximum). Without any time in between, the newest."""
    spans: list[tuple[int, float]] = []
    for n, rec in enumerate(recommendations):
        end = recommendations[n + 1].at if n + 1 < len(recommendations) else now
        seconds = end - max(rec.at, start)
        if seconds > 0:
            spans.append((rec.replicas, seconds))
    if not spans:
        return recommendations[-1].replicas
    allowed = sum(seconds for _, seconds in spans) * (100 - percentile) / 100
    above = 0.0
    ranked = sorted(spans, reverse=True)
    for replicas, seconds in ranked:
        above += seconds
        if above > allowed:
            return replicas
    return ranked[-1][0]


def decide(bounds: Bounds, current: int, backlog: int | None, now: float,
           history: History) -> Decision:
    """Desired replicas now; ``backlog`` is None when the broker could not be measured."""
    if backlog is None:
        held = min(max(current, bounds.min_replicas, bounds.fallback or 0),
                   max(current, bounds.max_replicas))
        return Decision(held, f"broker unreachable: holding {held} pods", history)

    if not history.recommendations or now < history.recommendations[-1].at:
        # First sight, or a history from the future: behave as if we had been at this
        # size all along.
        history = History((Recommendation(now, current),), now)
    active = backlog > bounds.activation
    last_active = now if active else history.last_active
    asked = recommend(bounds, current, backlog)
    recommendation, reason = asked.replicas, asked.reason
    panic_until = history.panic_until
    if active and backlog + bounds.arrivals >= PANIC_RATIO * current * bounds.target:
        panic_until = now + bounds.panic_seconds

    start = now - bounds.stabilization_seconds
    earlier = [r for r in history.recommendations if r.at < start][-1:]
    recommendations = (*earlier, *(r for r in history.recommendations if r.at >= start),
                       Recommendation(now, recommendation))
    history = History(recommendations, last_active, panic_until)

    if recommendation > current:
        desired = recommendation
        if bounds.max_step:
            desired = min(desired, current + bounds.max_step)
            reason += f", at most {bounds.max_step} more per step"
        return Decision(desired, reason, history)
    if recommendation == current:
        return Decision(bounds.clamp(recommendation), reason, history)
    lower = scaled_down(bounds, current, recommendation, now, history)
    desired, reason = lower.replicas, reason + lower.reason
    if desired == 0 and last_active is not None and (
            now - last_active < bounds.zero_cooldown_seconds):
        desired = min(current, 1)
        reason += f"; zero only after {bounds.zero_cooldown_seconds:.0f}s idle"
    return Decision(bounds.clamp(desired), reason, history)


def scaled_down(bounds: Bounds, current: int, wanted: int, now: float,
                history: History) -> Wanted:
    """How far a pool of ``current`` pods goes towards the lower ``wanted`` now, given the
    history (the newest recommendation included); the reason says what held it."""
    if history.panic_until is not None and now < history.panic_until:
        return Wanted(current, f"; held at {current} for {figure(bounds.panic_seconds)}s "
                               "after a jump")
    recommendations = history.recommendations
    start = now - bounds.stabilization_seconds
    if recommendations[0].at > start:  # shorter than the window (a restart): the seed
        percentile = 100                 # holds the pool for one window
        floor = min(current, max(r.replicas for r in recommendations))
    else:
        percentile = bounds.percentile
        floor = min(current, floor_of(recommendations, start, now, percentile))
    held = ""  # a suffix of the decision's reason (not a reason of its own)
    if floor > wanted:
        wanted = floor
        held = (f"; held at {floor} by the {figure(bounds.stabilization_seconds)}s "
                f"window (p{percentile})")
    step = max(1, math.ceil(current * bounds.step_percent / 100))
    if current - wanted > step:
        wanted = current - step
        held += f"; at most {step} fewer per step"
    return Wanted(wanted, held)


def at_rest(history: History, current: int) -> bool:
    """Nothing is pending in time: every recommendation the history holds is the current
    size, so the same backlog gives the same decision at any later time (no window or
    cooldown is running out)."""
    return bool(history.recommendations) and all(
        r.replicas == current for r in history.recommendations)
