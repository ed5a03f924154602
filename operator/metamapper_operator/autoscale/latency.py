"""The service-time policy: size a pool so every message starts within
``targetWaitSeconds``, from the throughput its pods have shown and the rate messages
arrive at.

Pure; the loop passes in each measurement. The throughput of one pod is measured from
what the operator sees anyway, the backlog at each probe of the broker and the pool's
ready pods:

    per pod = (backlog at the start of a span - backlog at its end) / span seconds / pods

where the backlog is the one the pool is sized from (waiting plus, with countInFlight,
delivered but unacknowledged messages, so a message counts as done when its worker
acknowledges it). A span starts at a probe and ends at the first later probe that finds
the backlog lower; probes that find it unchanged extend it (a task longer than the polling
interval finishes within a span, not between two probes), up to ``MAX_SPAN_SECONDS``.

Not every fall of the backlog is work done, so a span only counts when it can be:

- a backlog that rose starts a new span (arrivals hide the work done);
- the ready pods must be the same all along: a span in which they changed does not
  count, nor the first one after it. A worker that starts takes ``prefetch x
  concurrency`` messages at once, just before or just after its pod turns ready, and with
  countInFlight off they leave the backlog as if done.

The estimate is the lower median of the newest ``WINDOW`` spans, or the newest span if
that is lower. A fall no pod served (a purge, a restore counted elsewhere, a prefetch after
a worker resumed consuming) only ever raises a span's rate, and raises the estimate only
when it happens in more than half of them; a slower span lowers it at once (tasks that got
longer ask for more pods at the next probe; a lower estimate only errs towards a larger
pool), a faster pace raises it within ``WINDOW // 2 + 1`` spans.

A span counts in full while every pod had work all along (at least one message per pod at
its end). One that ends with fewer (the burst drained within it, so pods idled for part
of it) still shows at least that much work per second: a short burst drained between two
probes gives a lower bound, used only until a full span has been measured (the newest such
bound counts; ``lower_bound`` says so). Once spans are measured, a drained backlog adds
nothing: it is also what a purge looks like.

Tasks that arrive during a span hide part of the work done, so every span is itself a
lower bound on the real throughput, and a pool sized from a lower bound is larger, never
slower, than needed.

The arrival rate comes from the same probes: between two of them, the messages that
arrived are the backlog's rise plus what the ready pods finished meanwhile at the measured
rate (each message in service at a pod's rate over its concurrency, so a flat backlog of
long tasks is not taken for a flow; no more than the backlog they had), per second of the
newest ``ARRIVAL_SECONDS``. A steady flow that the pods keep up with leaves the backlog
flat: its arrivals are what the pods finished. Over a fixed span, not the probes': a burst
is in the backlog already, and counted again over the few seconds since the throughput
became known it would ask for its pods twice; a flow is underestimated for its first
minute, when the backlog sizes the pool.

With a throughput ``mu`` per pod, a pod starts ``concurrency`` messages at once and ``mu x
wait`` more as its tasks end within the wait, and ``rate x wait`` more messages arrive
meanwhile, so

    pods = ceil((backlog + rate x wait) / (concurrency + mu x wait))

which is Little's law in a steady flow (``rate / mu`` pods busy) and, with nothing
measured or a wait of 0, the backlog target of one message per worker process: the policy
in force is ``serviceTime`` once a throughput is measured, ``backlog`` (the pool's
targetBacklogPerReplica) before.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from metamapper_operator.autoscale.policy import Bounds

# The policies a pool can be sized by, as status names them.
BACKLOG, SERVICE_TIME = "backlog", "serviceTime"

# Spans the estimate is the lower median of: one high outlier among them never moves it.
WINDOW = 5
# A span without any message finished for this long is dropped (arrivals as fast as the
# pods work, or tasks longer than this): it would say little and would say it too low.
MAX_SPAN_SECONDS = 120.0
# The arrival rate is the messages that arrived over the newest this many seconds of probes.
ARRIVAL_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe of a pool: when (monotonic seconds), its backlog, its ready pods, and
    the messages each pod serves at once (its concurrency)."""

    time: float
    backlog: int
    ready: int
    slots: int = 1


@dataclass(frozen=True, slots=True)
class Arrived:
    """Messages that arrived between two probes, from ``start`` to ``end`` (seconds)."""

    start: float
    end: float
    messages: float


@dataclass(frozen=True, slots=True)
class Throughput:
    """What was measured of a pool so far: the per-pod rates of the newest spans in which
    every pod was busy (oldest first), else the newest lower bound from a burst drained
    within a span; the start of the current span, and whether that span follows a change
    of the ready pods (then it does not count either)."""

    rates: tuple[float, ...] = ()
    bound: float | None = None
    since: Sample | None = None
    settling: bool = False
    last: Sample | None = None                # the previous probe
    arrived: tuple[Arrived, ...] = ()         # the newest ARRIVAL_SECONDS of arrivals
    pods: str = ""                            # the pods measured (see of_pods)

    @property
    def per_pod(self) -> float | None:
        """Messages one pod finishes per second (None before a span was measured)."""
        if self.rates:
            return min(sorted(self.rates)[(len(self.rates) - 1) // 2], self.rates[-1])
        return self.bound

    @property
    def arrival_rate(self) -> float | None:
        """Messages arriving per second (None before a throughput was measured)."""
        if self.per_pod is None:
            return None
        return sum(a.messages for a in self.arrived) / ARRIVAL_SECONDS

    @property
    def lower_bound(self) -> bool:
        """True while ``per_pod`` comes only from bursts drained within a span."""
        return not self.rates and self.bound is not None


def of_pods(seen: Throughput, pods: str) -> Throughput:
    """What was measured of the pods ``pods`` names (a digest of their template): nothing
    when it names others. Pods of another concurrency, image, resources or settings work
    at another pace, so the pool is measured again from its next probe."""
    return seen if seen.pods == pods else Throughput(pods=pods)


def observe(seen: Throughput, sample: Sample) -> Throughput:
    """The throughput and arrivals after one more probe."""
    return replace(_served(seen, sample), last=sample, arrived=_arrivals(seen, sample))


def _arrivals(seen: Throughput, sample: Sample) -> tuple[Arrived, ...]:
    """The arrivals of the newest ARRIVAL_SECONDS, with those since the previous probe
    once a throughput is known (none from a clock that went back)."""
    kept = [a for a in seen.arrived
            if sample.time - ARRIVAL_SECONDS <= a.start and a.end <= sample.time]
    last, per_pod = seen.last, seen.per_pod
    if last is not None and per_pod is not None and sample.time > last.time:
        # The messages in service finish at the measured rate each (a pod's rate over
        # its slots): a flat backlog of long tasks is not a flow.
        serving = min(last.backlog, min(last.ready, sample.ready) * sample.slots)
        done = min(last.backlog, per_pod / sample.slots * serving
                   * (sample.time - last.time))
        kept.append(Arrived(last.time, sample.time,
                            max(0.0, sample.backlog - last.backlog + done)))
    return tuple(kept)


def _served(seen: Throughput, sample: Sample) -> Throughput:
    """The work done as measured after one more probe."""
    span = seen.since
    if span is None:
        return replace(seen, since=sample)
    changed = sample.ready != span.ready
    if changed or seen.settling or sample.time <= span.time:
        # A new span; it does not count if the ready pods changed at its start (the
        # settling lasts one interval: until a probe later than the change).
        return replace(seen, since=sample,
                       settling=changed or (seen.settling and sample.time <= span.time))
    if sample.backlog == span.backlog and sample.time - span.time <= MAX_SPAN_SECONDS:
        return seen                             # nothing finished yet: the span goes on
    if sample.backlog >= span.backlog or sample.ready == 0 or (
            sample.time - span.time > MAX_SPAN_SECONDS):
        return replace(seen, since=sample)
    rate = (span.backlog - sample.backlog) / (sample.time - span.time) / sample.ready
    if sample.backlog >= sample.ready:          # every pod busy until the end
        return replace(seen, rates=(*seen.rates, rate)[-WINDOW:], bound=None, since=sample)
    if seen.rates:                              # drained: says less than what was measured
        return replace(seen, since=sample)
    return replace(seen, bound=rate, since=sample)


@dataclass(frozen=True, slots=True)
class Sized:
    """The bounds a pool is decided with, the policy in force and the figures learned."""

    bounds: Bounds
    policy: str
    per_pod: float | None = None
    arrival_rate: float | None = None


def for_wait(bounds: Bounds, concurrency: int, wait_seconds: float,
             seen: Throughput) -> Sized:
    """The bounds the service time asks for, when there is a wait target and a measured
    throughput; else unchanged (the backlog target, with nothing measured to show)."""
    per_pod, rate = seen.per_pod, seen.arrival_rate
    if not wait_seconds or per_pod is None or rate is None:
        return Sized(bounds, BACKLOG)
    return Sized(replace(bounds, target=concurrency + per_pod * wait_seconds,
                         arrivals=rate * wait_seconds), SERVICE_TIME, per_pod, rate)
