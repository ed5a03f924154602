"""The latency target: size a pool so its backlog drains within ``targetWaitSeconds``.

Pure; the loop passes in each measurement. The throughput of one pod is measured from
what the operator sees anyway, between two consecutive probes of the broker:

    per pod = (backlog before - backlog after) / seconds between / ready pods

where the backlog is the one the pool is sized from (waiting plus, with countInFlight,
delivered but unacknowledged messages). Tasks that arrive meanwhile hide part of the
work done, so one interval gives a lower bound on the real throughput: only intervals in
which the backlog fell and still held at least one message per pod at the end (every pod
had work all along) count, and they are averaged (exponentially, half weight on the
newest). A pool sized from a lower bound is larger, never slower, than needed.

With a throughput, one pod can take ``per pod x targetWaitSeconds`` messages and still
finish them in time: that becomes the pool's backlog target for the policy. Until an
interval has been measured, the backlog target (targetBacklogPerReplica) is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from metamapper_operator.autoscale.policy import Bounds

WEIGHT = 0.5  # of the newest interval in the average


@dataclass(frozen=True)
class Sample:
    """One probe of a pool: when (monotonic seconds), its backlog, its ready pods."""

    time: float
    backlog: int
    ready: int


@dataclass(frozen=True)
class Throughput:
    """Messages one pod finishes per second (None before a measurement) and the sample
    the next interval starts from."""

    per_pod: float | None = None
    last: Sample | None = None


def observe(seen: Throughput, sample: Sample) -> Throughput:
    """The throughput after one more probe."""
    last = seen.last
    if last is None or sample.time <= last.time:
        return replace(seen, last=sample)
    pods = max(last.ready, sample.ready)
    if 0 < pods <= sample.backlog < last.backlog:
        rate = (last.backlog - sample.backlog) / (sample.time - last.time) / pods
        per_pod = rate if seen.per_pod is None else (
            WEIGHT * rate + (1 - WEIGHT) * seen.per_pod)
        return Throughput(per_pod, sample)
    return replace(seen, last=sample)


def backlog_within(per_pod: float, wait_seconds: float) -> int:
    """Messages one pod finishes within the wait (at least one)."""
    return max(1, math.floor(per_pod * wait_seconds))


def for_wait(bounds: Bounds, wait_seconds: float | None, seen: Throughput) -> Bounds:
    """The bounds with the backlog target the latency target asks for, when there is a
    target and a measured throughput; else unchanged (the backlog target)."""
    if wait_seconds is None or seen.per_pod is None:
        return bounds
    return replace(bounds, target=backlog_within(seen.per_pod, wait_seconds))
