"""The latency target: size a pool so its backlog drains within ``targetWaitSeconds``.

Pure; the loop passes in each measurement. The throughput of one pod is measured from
what the operator sees anyway, the backlog at each probe of the broker and the pool's
ready pods:

    per pod = (backlog at the start of a span - backlog at its end) / span seconds / pods

where the backlog is the one the pool is sized from (waiting plus, with countInFlight,
delivered but unacknowledged messages, so a message counts as done when its worker
acknowledges it) and pods is the most pods ready during the span. A span starts at a
probe and ends at the first later probe that finds the backlog lower; probes that find
it unchanged extend it (a task longer than the polling interval finishes within a span,
not between two probes), up to ``MAX_SPAN_SECONDS``. A span only counts while every pod
had work all along (at least one message per pod at its end); a backlog that rose, or
one too small to keep every pod busy, starts a new span. Tasks that arrive during a span
hide part of the work done, so a span gives a lower bound on the real throughput, and a
pool sized from a lower bound is larger, never slower, than needed. Spans are averaged
exponentially, half weight on the newest.

With a throughput, one pod can take ``per pod x targetWaitSeconds`` messages and still
finish them in time: that becomes the pool's backlog target for the policy. Until a span
has been measured, the backlog target (targetBacklogPerReplica) is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from metamapper_operator.autoscale.policy import Bounds

WEIGHT = 0.5  # of the newest span in the average
# A span without any message finished for this long is dropped (arrivals as fast as the
# pods work, or tasks longer than this): it would say little and would say it too low.
MAX_SPAN_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe of a pool: when (monotonic seconds), its backlog, its ready pods."""

    time: float
    backlog: int
    ready: int


@dataclass(frozen=True, slots=True)
class Throughput:
    """Messages one pod finishes per second (None before a span was measured), and the
    start of the current span (its ``ready``: the most pods ready during the span)."""

    per_pod: float | None = None
    since: Sample | None = None


def observe(seen: Throughput, sample: Sample) -> Throughput:
    """The throughput after one more probe."""
    span = seen.since
    if span is None or sample.time <= span.time:
        return replace(seen, since=sample)
    pods = max(span.ready, sample.ready)
    busy = 0 < pods <= sample.backlog
    if not busy or sample.backlog > span.backlog or (
            sample.time - span.time > MAX_SPAN_SECONDS):
        return replace(seen, since=sample)
    if sample.backlog == span.backlog:  # nothing finished yet: the span goes on
        return replace(seen, since=replace(span, ready=pods))
    rate = (span.backlog - sample.backlog) / (sample.time - span.time) / pods
    per_pod = rate if seen.per_pod is None else WEIGHT * rate + (1 - WEIGHT) * seen.per_pod
    return Throughput(per_pod, sample)


def backlog_within(per_pod: float, wait_seconds: float) -> int:
    """Messages one pod finishes within the wait (at least one)."""
    return max(1, math.floor(per_pod * wait_seconds))


def for_wait(bounds: Bounds, wait_seconds: float | None, seen: Throughput) -> Bounds:
    """The bounds with the backlog target the latency target asks for, when there is a
    target and a measured throughput; else unchanged (the backlog target)."""
    if wait_seconds is None or seen.per_pod is None:
        return bounds
    return replace(bounds, target=backlog_within(seen.per_pod, wait_seconds))
