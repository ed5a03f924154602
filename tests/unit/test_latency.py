"""The service-time policy: throughput and arrivals measured between probes, and the size
they give.

Table tests for each rule; property tests for what the estimate guarantees: steady
service is measured as it is, and a spike in the backlog's fall that no pod served (a
purge, a new worker's prefetch, a restore) never raises it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metamapper_operator.autoscale.latency import (
    ARRIVAL_SECONDS,
    BACKLOG,
    SERVICE_TIME,
    WINDOW,
    Arrived,
    Sample,
    Throughput,
    for_wait,
    observe,
    of_pods,
)
from metamapper_operator.autoscale.policy import (
    Bounds,
    Decision,
    History,
    decide,
    recommend,
)

BOUNDS = Bounds(min_replicas=1, max_replicas=50, target=4)


def feed(samples: Iterable[Sample]) -> Throughput:
    seen = Throughput()
    for sample in samples:
        seen = observe(seen, sample)
    return seen


def estimates(samples: Iterable[Sample]) -> Iterator[float | None]:
    """The estimate after each probe."""
    seen = Throughput()
    for sample in samples:
        seen = observe(seen, sample)
        yield seen.per_pod


def test_no_history_keeps_the_backlog_target() -> None:
    seen = feed([Sample(0, 100, 2)])
    assert seen.per_pod is None
    assert for_wait(BOUNDS, 4, 30, seen).bounds == BOUNDS
    assert for_wait(BOUNDS, 4, 30, seen).policy == BACKLOG
    measured = for_wait(BOUNDS, 4, 0, feed([Sample(0, 100, 2), Sample(5, 80, 2)]))
    assert (measured.bounds, measured.policy) == (BOUNDS, BACKLOG)   # a wait of 0: off
    assert measured.per_pod is None                     # and no throughput to show


def test_the_throughput_of_other_pods_is_not_kept() -> None:
    seen = of_pods(Throughput(), "template-1")
    for sample in (Sample(0, 100, 2), Sample(5, 80, 2)):
        seen = observe(seen, sample)
    assert of_pods(seen, "template-1").per_pod == pytest.approx(2.0)
    assert of_pods(seen, "template-2") == Throughput(pods="template-2")


def test_a_falling_backlog_gives_the_throughput_per_ready_pod() -> None:
    seen = feed([Sample(0, 100, 2), Sample(5, 80, 2)])   # 20 in 5 s by 2 pods
    assert seen.per_pod == pytest.approx(2.0)
    assert not seen.lower_bound
    sized = for_wait(BOUNDS, 4, 30, seen)
    assert sized.policy == SERVICE_TIME
    assert sized.bounds.target == 64    # one pod: 4 at once, 60 more within 30 s


@pytest.mark.parametrize(("second", "why"), [
    (Sample(5, 120, 2), "backlog rose: arrivals hide the work done"),
    (Sample(0, 50, 2), "no time passed"),
])
def test_spans_that_do_not_show_throughput_are_not_counted(second: Sample, why: str
                                                           ) -> None:
    seen = feed([Sample(0, 100, 2), second])
    assert seen.per_pod is None, why
    assert seen.since == second             # a new span starts


def test_no_ready_pods_no_throughput() -> None:
    assert feed([Sample(0, 100, 0), Sample(5, 90, 0)]).per_pod is None


@pytest.mark.parametrize(("end", "target"), [(Sample(5, 0, 2), 45), (Sample(5, 1, 2), 44)])
def test_a_burst_drained_within_a_span_gives_a_lower_bound(end: Sample, target: int
                                                           ) -> None:
    """Pods may have idled once the backlog was below one message each: the fall over
    the span is a lower bound on what they can do, better than no estimate at all (a
    short burst drained between two probes must still be measured)."""
    seen = feed([Sample(0, 41, 2), end])
    assert seen.per_pod == pytest.approx((41 - end.backlog) / 5 / 2)
    assert seen.lower_bound
    assert seen.since == end
    assert for_wait(BOUNDS, 4, 10, seen).bounds.target == pytest.approx(target)  # 4 + 41, 40


def test_a_measured_span_replaces_a_lower_bound() -> None:
    seen = feed([Sample(0, 30, 1), Sample(5, 0, 1),       # at least 6 /s
                 Sample(20, 50, 1), Sample(25, 40, 1)])    # 2 /s, every pod busy
    assert seen.per_pod == pytest.approx(2.0)
    assert not seen.lower_bound


def test_the_newest_lower_bound_counts_until_a_span_is_measured() -> None:
    seen = feed([Sample(0, 30, 1), Sample(5, 0, 1),       # at least 6 /s
                 Sample(20, 8, 1), Sample(24, 0, 1)])      # at least 2 /s
    assert seen.per_pod == pytest.approx(2.0)
    assert seen.lower_bound


def test_a_drained_backlog_does_not_move_a_measured_estimate() -> None:
    """A purge to zero looks like a burst drained at once: once spans have been measured,
    a lower bound adds nothing and is not taken."""
    seen = feed([Sample(0, 100, 1), Sample(5, 90, 1),     # 2 /s
                 Sample(7, 0, 1)])                         # purged: "45 /s"
    assert seen.per_pod == pytest.approx(2.0)
    assert not seen.lower_bound


def test_a_span_in_which_the_ready_pods_changed_is_not_counted() -> None:
    """A worker that starts takes prefetch x concurrency messages at once, just before or
    just after its pod turns ready: neither that span nor the next one counts."""
    seen = feed([Sample(0, 100, 1), Sample(5, 60, 2)])    # 40 gone, 30 of them prefetched
    assert seen.per_pod is None
    seen = feed([Sample(0, 100, 1), Sample(5, 60, 2),
                 Sample(7, 50, 2),                         # the first interval after
                 Sample(9, 46, 2)])                        # 1 /s per pod
    assert seen.per_pod == pytest.approx(1.0)


def test_probes_without_a_finished_task_extend_the_span() -> None:
    """Tasks of 2 s, probes every second: one message every other probe. The rate is
    0.5 /s, not 1 /s (counting only the probes that saw a message finish) nor 0."""
    backlog = [10, 10, 9, 9, 8, 8, 7]
    seen = feed([Sample(t, b, 1) for t, b in enumerate(backlog)])
    assert seen.per_pod == pytest.approx(0.5)


def test_a_span_without_progress_is_dropped_after_its_limit() -> None:
    seen = feed([Sample(0, 10, 1), Sample(60, 10, 1), Sample(121, 10, 1),
                 Sample(125, 8, 1)])
    assert seen.per_pod == pytest.approx(0.5)   # from 121 s on, not from 0 s


def test_the_estimate_is_the_lower_median_of_the_newest_spans_or_the_newest_if_lower(
        ) -> None:
    rates = [1.0, 2.0, 50.0, 3.0, 4.0, 5.0, 6.0, 1.0, 6.0]
    samples, backlog = [Sample(0, 10_000, 1)], 10_000
    for n, rate in enumerate(rates, start=1):
        backlog -= int(rate * 10)
        samples.append(Sample(10 * n, backlog, 1))
    got = list(estimates(samples))[1:]
    # [1] [1 2] [1 2 50] [1 2 50 3] [1 2 50 3 4] [2 50 3 4 5] [50 3 4 5 6]: the lower
    # median; [3 4 5 6 1]: the newest, lower (4); [4 5 6 1 6]: the lower median again
    assert got == pytest.approx([1.0, 1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 1.0, 5.0])
    assert WINDOW == 5


def test_a_scale_up_is_not_undone_by_the_new_workers_prefetch() -> None:
    """1 message per second and pod, countInFlight off (the backlog is the waiting
    messages only), workers that take 16 messages each as they start. The pool asks for
    the pods its backlog needs at the true rate all along; read as throughput, the
    prefetch made the pool ask for 4 pods right after asking for 14."""
    samples = [
        Sample(0, 400, 1),
        Sample(2, 398, 1),     # 2 done: 1 /s
        Sample(4, 348, 4),     # 2 done, 3 new workers took 48
        Sample(6, 324, 4),     # 8 done, a fourth took 16 before its pod is seen ready
        Sample(8, 316, 4),     # 8 done: 1 /s per pod
        Sample(10, 292, 5),    # 8 done, the fifth pod took 16
        Sample(12, 282, 5),    # 10 done
        Sample(14, 272, 5),    # 10 done: 1 /s per pod
    ]
    seen, asked = observe(Throughput(), samples[0]), []
    for sample in samples[1:]:
        seen = observe(seen, sample)
        bounds = for_wait(Bounds(min_replicas=1, max_replicas=20, target=4), 1, 30,
                          seen).bounds
        asked.append(decide(replace(bounds, arrivals=0), 1, sample.backlog, sample.time,
                            History()).replicas)
        assert seen.per_pod == pytest.approx(1.0), sample
    assert asked == [math.ceil(s.backlog / 31) for s in samples[1:]]   # 13, 12, 11, ...


@pytest.mark.parametrize(("per_pod", "backlog", "pods"), [
    (1.0, 340, 10),    # 4 at once and 30 more within 30 s: 34 per pod, 10 pods
    (2.0, 320, 5),     # twice as fast: 64 per pod, half the pods
    (0.5, 380, 20),    # half as fast: 19 per pod, twice the pods
    (0.01, 300, 50),   # slower than max allows: capped
    (0.01, 8, 2),      # long tasks: about concurrency per pod, as the backlog target
])
def test_the_size_follows_throughput(per_pod: float, backlog: int, pods: int) -> None:
    bounds = for_wait(BOUNDS, 4, 30, Throughput(rates=(per_pod,))).bounds
    assert decide(bounds, 1, backlog, 0.0, History()).replicas == pods


def test_a_steady_flow_the_pods_keep_up_with_is_measured_as_arrivals() -> None:
    """3 pods finishing 1 message per second each, a backlog that stays at 12: 3 messages
    arrive every second. Little's law: 3 pods stay busy whatever the wait."""
    seen = feed([Sample(0, 40, 3), Sample(2, 34, 3),                   # 1 /s per pod
                 *(Sample(t, 12, 3) for t in range(4, 70, 2))])
    assert seen.per_pod == pytest.approx(1.0)
    assert seen.arrival_rate == pytest.approx(3.0)
    for wait in (1, 10, 100):
        sized = for_wait(BOUNDS, 4, wait, seen)
        assert decide(sized.bounds, 3, 12, 70, History()).replicas == 3, wait


def test_arrivals_count_the_rise_and_what_the_pods_finished_meanwhile() -> None:
    seen = feed([Sample(0, 20, 2), Sample(2, 16, 2),       # 1 /s per pod
                 Sample(4, 40, 2)])                         # +24, 4 finished: 28 came
    assert seen.arrived[-1] == Arrived(2, 4, 28)
    assert seen.arrival_rate == pytest.approx(28 / ARRIVAL_SECONDS)  # not per 2 s: a burst
    # Pods with less backlog than they could finish did no more than that backlog.
    idle = feed([Sample(0, 20, 2), Sample(2, 16, 2), Sample(4, 1, 2), Sample(6, 1, 2)])
    assert idle.arrived[-1] == Arrived(4, 6, 1)
    # No arrivals are counted before a throughput is known, nor kept past their window.
    assert feed([Sample(0, 10, 1), Sample(2, 50, 1)]).arrived == ()
    old = feed([Sample(0, 20, 2), Sample(2, 16, 2), Sample(4, 40, 2),
                Sample(4 + ARRIVAL_SECONDS, 40, 2), Sample(6 + ARRIVAL_SECONDS, 40, 2)])
    assert [a.start for a in old.arrived] == [4 + ARRIVAL_SECONDS]


def test_a_flat_backlog_of_long_tasks_is_not_taken_for_a_flow() -> None:
    """8 pods of concurrency 2 measured at 0.1 message per second each, then 3 long
    tasks running for minutes: a flat backlog of 3. Only the 3 messages in service can
    have finished meanwhile (at 0.05 /s each), not what 8 busy pods would have: the pool
    is sized for them (2 pods), not for arrivals that never came (3 pods)."""
    seen = feed([Sample(0, 100, 8, 2), Sample(10, 92, 8, 2),
                 *(Sample(t, 3, 8, 2) for t in range(12, 200, 2))])
    assert seen.per_pod == pytest.approx(0.1)
    assert seen.arrival_rate == pytest.approx(3 * 0.05)
    assert recommend(for_wait(BOUNDS, 2, 2, seen).bounds, 8, 3).replicas == 2


def test_a_clock_going_backwards_counts_no_arrivals_from_the_future() -> None:
    seen = feed([Sample(1000, 20, 2), Sample(1002, 16, 2), Sample(1004, 40, 2),
                 Sample(500, 40, 2), Sample(502, 42, 2)])
    assert [(a.start, a.end) for a in seen.arrived] == [(500, 502)]
    rate = seen.arrival_rate
    assert rate is not None and rate >= 0


def test_the_strangest_figures_still_give_a_size_within_bounds() -> None:
    huge = Bounds(min_replicas=0, max_replicas=2**31 - 1, target=1)
    fast = for_wait(huge, 2**31 - 1, 2**31 - 1, Throughput(rates=(1e9,)))
    assert decide(fast.bounds, 0, 2**31 - 1, 0, History()).replicas == 1
    slow = for_wait(huge, 1, 2**31 - 1, Throughput(rates=(1e-9,), arrived=(
        Arrived(0, 1, 2**31 - 1),)))
    assert decide(slow.bounds, 0, 1, 0, History()).replicas == 2**31 - 1


# --- properties --------------------------------------------------------------------
#
# A pool serves ``rate`` messages per second and pod; it is probed every 2 to 10 s, so
# every interval finishes at least one message. A span's fall is whole messages, so a
# span of ``dt`` seconds by ``pods`` pods may show up to one message more than the rate:
# the estimate is within ``1 / (pods x 2 s)`` of the rate.

START = 10**7     # messages waiting: every pod is busy throughout
rates = st.floats(0.5, 20.0)
pod_counts = st.integers(1, 8)
gaps = st.lists(st.floats(2.0, 10.0), min_size=2, max_size=30)


def slack(pods: int) -> float:
    return 1 / (pods * 2.0)


def served(samples: list[tuple[float, int]], rate: float) -> list[int]:
    """Messages finished by each probe's time: ``rate`` per pod and second, with the pods
    ready at the interval's start."""
    done, total, last = [], 0.0, 0.0
    previous_pods = samples[0][1] if samples else 0
    for time, pods in samples:
        total += rate * previous_pods * (time - last)
        done.append(math.floor(total))
        last, previous_pods = time, pods
    return done


def times(steps: list[float]) -> list[float]:
    out, now = [], 0.0
    for step in steps:
        now += step
        out.append(now)
    return out


@given(rates, pod_counts, gaps)
def test_steady_service_is_measured_as_it_is(rate: float, pods: int, steps: list[float]
                                             ) -> None:
    probes = [(t, pods) for t in times(steps)]
    done = served(probes, rate)
    got = list(estimates(Sample(t, START - d, pods) for (t, _), d in zip(probes, done,
                                                                         strict=True)))
    assert got[0] is None
    for per_pod in got[1:]:
        assert per_pod is not None
        assert abs(per_pod - rate) <= slack(pods) + 1e-9


@given(rates, pod_counts, gaps, st.data())
def test_arrivals_never_raise_the_estimate(rate: float, pods: int, steps: list[float],
                                           data: st.DataObject) -> None:
    """Tasks queued during a span hide work done: the estimate is a lower bound."""
    probes = [(t, pods) for t in times(steps)]
    done = served(probes, rate)
    arrived = 0
    samples = []
    for (t, _), d in zip(probes, done, strict=True):
        arrived += data.draw(st.integers(0, 50))
        samples.append(Sample(t, START - d + arrived, pods))
    for per_pod in estimates(samples):
        assert per_pod is None or per_pod <= rate + slack(pods) + 1e-9


@given(rates, pod_counts, gaps, st.data())
def test_a_purge_or_a_restore_never_raises_the_estimate(
        rate: float, pods: int, steps: list[float], data: st.DataObject) -> None:
    """One fall that no pod served (messages purged, or restored elsewhere), of any size,
    after a span of steady service, leaves the estimate where the steady spans put it."""
    steps = [*steps, 2.0, 2.0]
    probes = [(t, pods) for t in times(steps)]
    done = served(probes, rate)
    at = data.draw(st.integers(2, len(probes) - 1), label="spike at probe")
    size = data.draw(st.integers(1, START // 2), label="messages gone at once")
    samples = [Sample(t, START - d - (size if n >= at else 0), pods)
               for n, ((t, _), d) in enumerate(zip(probes, done, strict=True))]
    for per_pod in list(estimates(samples))[1:]:
        assert per_pod is not None
        assert per_pod <= rate + slack(pods) + 1e-9


@given(rates, gaps, st.data())
def test_prefetch_as_pods_turn_ready_never_raises_the_estimate(
        rate: float, steps: list[float], data: st.DataObject) -> None:
    """Whenever the ready pods change, the new workers take up to ``prefetch x
    concurrency`` messages each at once: in the interval before the probe that sees the
    change or in the interval after it. None of it counts as throughput."""
    ready = [data.draw(pod_counts, label="ready") for _ in steps]
    probes = list(zip(times(steps), ready, strict=True))
    done = served(probes, rate)
    taken, samples = 0, []
    for n, ((t, pods), d) in enumerate(zip(probes, done, strict=True)):
        changed = n > 0 and pods != ready[n - 1]
        after_change = n > 1 and ready[n - 1] != ready[n - 2]
        if changed or after_change:
            taken += data.draw(st.integers(0, 1000), label="prefetched")
        samples.append(Sample(t, START - d - taken, pods))
    for per_pod, sample in zip(estimates(samples), samples, strict=True):
        assert per_pod is None or per_pod <= rate + slack(1) + 1e-9, sample


@given(rates, rates, pod_counts, st.lists(st.floats(2.0, 10.0), min_size=2 * WINDOW,
                                          max_size=30))
def test_a_lasting_change_of_rate_is_followed_within_half_a_window(
        before: float, after: float, pods: int, steps: list[float]) -> None:
    probes = [(t, pods) for t in times(steps)]
    switch = len(probes) - (WINDOW // 2 + 1)      # the last spans run at the new rate
    first = served(probes[:switch], before)
    later = served([(t - probes[switch - 1][0], p) for t, p in probes[switch - 1:]], after)
    done = first + [first[-1] + d for d in later[1:]]
    per_pod = feed(Sample(t, START - d, pods)
                   for (t, _), d in zip(probes, done, strict=True)).per_pod
    assert per_pod is not None
    assert abs(per_pod - after) <= slack(pods) + 1e-9


# --- the end-to-end test's story, at any probe spacing -------------------------------
#
# tests/e2e/test_autoscale_inputs.py::test_a_latency_target_sizes_the_pool_by_measured_
# throughput, simulated: the operator polls every second, but a cycle may take up to 3 s;
# a task takes its sleep plus an overhead of up to 0.1 s (a busy machine); a new pod is
# ready 2 to 20 s after it is asked for. The one assumption: some probe sees the short
# burst (4 s of work, longer than any gap between probes).

E2E = Bounds(min_replicas=1, max_replicas=4, target=100, stabilization_seconds=4,
             zero_cooldown_seconds=4)


@dataclass
class Pool:
    """Pods of concurrency 1, ready from their ``ready_at`` on, consuming ``total`` tasks
    sent at ``sent``."""

    sent: float
    task: float
    total: int
    ready_at: list[float] = field(default_factory=lambda: [-math.inf])

    def backlog(self, now: float) -> int:
        """Messages not yet acknowledged (acks late: a task's message until it ends)."""
        if now < self.sent:
            return 0
        done = sum(math.floor((now - max(ready, self.sent)) / self.task)
                   for ready in self.ready_at if now > ready)
        return self.total - min(self.total, done)

    def ready(self, now: float) -> int:
        return sum(ready <= now for ready in self.ready_at)


@given(st.floats(0.0, 0.1), st.floats(2.0, 20.0), st.data())
def test_the_end_to_end_story_holds_at_any_probe_spacing(
        overhead: float, startup: float, data: st.DataObject) -> None:
    """20 tasks of 0.2 s keep one pod and are measured however the probes fall; 36 tasks
    of 2 s then ask for 4 pods within 60 s, the pool never shrinking meanwhile."""
    now = data.draw(st.floats(-3.0, 0.0), label="last probe before the burst")
    seen, current = observe(Throughput(), Sample(now, 0, 1)), 1
    decision = Decision(1, "", History())

    def probe(pool: Pool) -> None:
        nonlocal now, seen, decision
        now += data.draw(st.floats(1.0, 3.0), label="gap")
        backlog = pool.backlog(now)
        seen = observe(seen, Sample(now, backlog, pool.ready(now)))
        decision = decide(for_wait(E2E, 1, 10, seen).bounds, current, backlog, now,
                          decision.history)

    fast = Pool(0.0, 0.2 + overhead, 20)
    while now < fast.sent or fast.backlog(now):   # until a probe finds the burst drained
        probe(fast)
        assert decision.replicas == 1, seen
    assert seen.per_pod is not None        # the status shows a throughput

    slow = Pool(now + 0.5, 2.0 + overhead, 36)
    while now - slow.sent <= 60 and decision.replicas < 4:
        probe(slow)
        assert decision.replicas >= current, seen            # the pool never shrinks
        slow.ready_at += [now + startup] * (decision.replicas - current)
        current = decision.replicas
    assert decision.replicas == 4, (now - slow.sent, seen)
