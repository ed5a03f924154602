"""The scaling policy: desired replicas from a pool's backlog. Pure; no I/O, no clock.

    desired = clamp(ceil(backlog / targetBacklogPerReplica), min, max)

refined the way the HPA and KEDA refine it, and where they fall short for queues:

- activation: a pool at zero wakes only when the backlog exceeds ``activationBacklog``;
- scale-up is immediate (optionally at most ``maxScaleUpStep`` pods per step);
- scale-down takes the highest recommendation of the last
  ``scaleDownStabilizationSeconds`` (the HPA's stabilization window), and to zero only
  after the backlog stayed at or below activation for ``scaleToZeroCooldownSeconds``;
- changes within ``tolerance`` of the current size are ignored;
- when the broker cannot be measured the pool holds its size (or rises to
  ``fallbackReplicas``): it is never scaled down because of an error.

History is seeded with the current size at the first observation, so an operator that
restarts does not scale anything down for one window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

from metamapper_operator.model import Pool


@dataclass(frozen=True, kw_only=True, slots=True)
class Bounds:
    """A pool's autoscaling knobs, as the policy sees them."""

    min_replicas: int
    max_replicas: int
    target: int
    activation: int = 0
    stabilization_seconds: float = 60.0
    zero_cooldown_seconds: float = 300.0
    tolerance: float = 0.1
    max_step: int = 0
    fallback: int | None = None

    @classmethod
    def of(cls, pool: Pool) -> Bounds:
        auto = pool.autoscaling
        return cls(min_replicas=pool.min_replicas, max_replicas=pool.max_replicas,
                   target=pool.target_per_replica, activation=auto.activation_backlog,
                   stabilization_seconds=auto.scale_down_stabilization_seconds,
                   zero_cooldown_seconds=auto.scale_to_zero_cooldown_seconds,
                   tolerance=auto.tolerance, max_step=auto.max_scale_up_step,
                   fallback=auto.fallback_replicas)

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


class Recommendation(NamedTuple):
    """The size the backlog asked for at one time (before stabilization)."""

    at: float
    replicas: int


@dataclass(frozen=True, slots=True)
class History:
    """What the policy remembers of a pool between decisions."""

    recommendations: tuple[Recommendation, ...] = ()
    last_active: float | None = None                      # last time backlog > activation


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


def recommend(bounds: Bounds, current: int, backlog: int) -> Wanted:
    """The size this backlog alone asks for, before stabilization."""
    if backlog <= bounds.activation:
        return Wanted(bounds.min_replicas, f"backlog {backlog}: idle")
    wanted = max(1, math.ceil(backlog / bounds.target))
    if current > 0 and abs(backlog / (bounds.target * current) - 1) <= bounds.tolerance:
        return Wanted(bounds.clamp(current),
                      f"backlog {backlog} within tolerance of {current} pods")
    return Wanted(bounds.clamp(wanted), f"backlog {backlog} / {bounds.target} per pod "
                                        f"= {wanted} pods")


def decide(bounds: Bounds, current: int, backlog: int | None, now: float,
           history: History) -> Decision:
    """Desired replicas now; ``backlog`` is None when the broker could not be measured."""
    if backlog is None:
        held = min(max(current, bounds.min_replicas, bounds.fallback or 0),
                   max(current, bounds.max_replicas))
        return Decision(held, f"broker unreachable: holding {held} pods", history)

    if not history.recommendations:  # first sight: behave as if we had been at this size
        history = History((Recommendation(now, current),), now)
    active = backlog > bounds.activation
    last_active = now if active else history.last_active
    asked = recommend(bounds, current, backlog)
    recommendation, reason = asked.replicas, asked.reason

    window_start = now - bounds.stabilization_seconds
    kept = tuple(r for r in history.recommendations if r.at >= window_start)
    recommendations = (*kept, Recommendation(now, recommendation))
    history = replace(history, recommendations=recommendations, last_active=last_active)

    desired = recommendation
    if desired > current:
        if bounds.max_step:
            desired = min(desired, current + bounds.max_step)
            reason += f", at most {bounds.max_step} more per step"
        return Decision(desired, reason, history)
    if desired < current:
        stable = max(r.replicas for r in recommendations)
        if stable > desired:
            desired = min(current, stable)
            reason += f"; held at {desired} by the {bounds.stabilization_seconds:.0f}s window"
        if desired == 0 and last_active is not None and (
                now - last_active < bounds.zero_cooldown_seconds):
            desired = min(current, 1)
            reason += f"; zero only after {bounds.zero_cooldown_seconds:.0f}s idle"
    return Decision(bounds.clamp(desired), reason, history)


def at_rest(history: History, current: int) -> bool:
    """Nothing is pending in time: every recommendation the history holds is the current
    size, so the same backlog gives the same decision at any later time (no window or
    cooldown is running out)."""
    return bool(history.recommendations) and all(
        r.replicas == current for r in history.recommendations)
