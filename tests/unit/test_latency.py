"""The latency target: throughput measured between probes, and the size it gives."""

from __future__ import annotations

import pytest

from metamapper_operator.autoscale.latency import (
    Sample,
    Throughput,
    backlog_within,
    for_wait,
    observe,
)
from metamapper_operator.autoscale.policy import Bounds, History, decide

BOUNDS = Bounds(min_replicas=1, max_replicas=50, target=4)


def feed(samples: list[Sample]) -> Throughput:
    seen = Throughput()
    for sample in samples:
        seen = observe(seen, sample)
    return seen


def test_no_history_keeps_the_backlog_target() -> None:
    seen = feed([Sample(0, 100, 2)])
    assert seen.per_pod is None
    assert for_wait(BOUNDS, 30, seen) == BOUNDS
    assert for_wait(BOUNDS, None, feed([Sample(0, 100, 2), Sample(5, 80, 2)])) == BOUNDS


def test_a_falling_backlog_gives_the_throughput_per_ready_pod() -> None:
    seen = feed([Sample(0, 100, 2), Sample(5, 80, 2)])   # 20 in 5 s by 2 pods
    assert seen.per_pod == pytest.approx(2.0)
    assert for_wait(BOUNDS, 30, seen).target == 60        # one pod: 60 messages in 30 s


@pytest.mark.parametrize(("second", "why"), [
    (Sample(5, 120, 2), "backlog rose: arrivals hide the work done"),
    (Sample(5, 1, 2), "fewer messages than pods at the end: some pods may have idled"),
    (Sample(5, 0, 2), "drained: the pods may have idled part of the interval"),
    (Sample(0, 50, 2), "no time passed"),
])
def test_spans_that_do_not_show_throughput_are_not_counted(second: Sample, why: str
                                                           ) -> None:
    seen = feed([Sample(0, 100, 2), second])
    assert seen.per_pod is None, why
    assert seen.since == second             # a new span starts


def test_no_ready_pods_no_throughput() -> None:
    assert feed([Sample(0, 100, 0), Sample(5, 90, 0)]).per_pod is None


def test_pods_that_became_ready_during_the_span_are_counted() -> None:
    # 1 pod ready at the start, 4 at the end: divided by 4 (never overestimated).
    assert feed([Sample(0, 100, 1), Sample(5, 80, 4)]).per_pod == pytest.approx(1.0)
    # ... also when they were ready only in the middle of a span.
    assert feed([Sample(0, 100, 1), Sample(1, 100, 4), Sample(2, 100, 1),
                 Sample(4, 92, 1)]).per_pod == pytest.approx(0.5)   # 8 / 4 s / 4 pods


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


def test_the_average_follows_the_newest_spans() -> None:
    seen = feed([Sample(0, 100, 1), Sample(10, 90, 1),    # 1.0 /s
                 Sample(20, 70, 1),                        # 2.0 /s
                 Sample(30, 80, 1),                        # rose: ignored
                 Sample(40, 40, 1)])                       # 4.0 /s
    assert seen.per_pod == pytest.approx(0.5 * 4 + 0.5 * (0.5 * 2 + 0.5 * 1))
    assert seen.since == Sample(40, 40, 1)


@pytest.mark.parametrize(("per_pod", "wait", "expected"), [
    (2.0, 30, 60), (0.1, 5, 1), (0.01, 5, 1), (3.3, 10, 33),
])
def test_backlog_within(per_pod: float, wait: float, expected: int) -> None:
    assert backlog_within(per_pod, wait) == expected


@pytest.mark.parametrize(("per_pod", "backlog", "pods"), [
    (1.0, 300, 10),    # 300 messages, 30 per pod within 30 s: 10 pods
    (2.0, 300, 5),     # twice as fast: half the pods
    (0.5, 300, 20),    # half as fast: twice the pods
    (0.1, 300, 50),    # slower than max allows: capped
])
def test_the_size_follows_throughput(per_pod: float, backlog: int, pods: int) -> None:
    bounds = for_wait(BOUNDS, 30, Throughput(per_pod, None))
    assert decide(bounds, 1, backlog, 0.0, History()).replicas == pods
