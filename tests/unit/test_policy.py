"""The scaling policy: table tests for each rule, property tests for its guarantees."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metamapper_operator.autoscale.policy import (
    Bounds,
    Decision,
    History,
    Recommendation,
    decide,
    floor_of,
)
from metamapper_operator.model import MAX_INT32

BOUNDS = Bounds(min_replicas=1, max_replicas=10, target=4, stabilization_seconds=300,
                zero_cooldown_seconds=120, tolerance=0.1)


def run(bounds: Bounds, current: int, backlogs: list[tuple[float, int | None]]) -> Decision:
    """Feed a series of (time, backlog) observations, applying each decision."""
    history = History()
    decision = Decision(current, "", history)
    for now, backlog in backlogs:
        decision = decide(bounds, current, backlog, now, history)
        current, history = decision.replicas, decision.history
    return decision


@pytest.mark.parametrize(("current", "backlog", "expected"), [
    (1, 0, 1),      # min holds
    (1, 4, 1),      # exactly one pod's worth
    (1, 5, 2),      # ceil(5 / 4)
    (1, 40, 10),    # ceil(40 / 4)
    (1, 400, 10),   # capped at max
    (10, 41, 10),   # within tolerance of the current size: no change
    (5, 21, 5),     # 21 / (4 * 5) = 1.05: within tolerance
    (5, 26, 7),     # 26 / 20 = 1.3: scale up to ceil(26 / 4)
])
def test_scale_up_is_immediate_and_bounded(current: int, backlog: int, expected: int) -> None:
    assert decide(BOUNDS, current, backlog, 0.0, History()).replicas == expected


def test_scale_down_waits_for_the_stabilization_window() -> None:
    series: list[tuple[float, int | None]] = [(0, 40), (10, 0), (200, 0), (299, 0)]
    assert run(BOUNDS, 1, series).replicas == 10
    assert run(BOUNDS, 1, [*series, (311, 0)]).replicas == 1


def test_scale_down_follows_the_highest_recommendation_in_the_window() -> None:
    series: list[tuple[float, int | None]] = [(0, 40), (100, 20), (200, 0), (401, 0)]
    # Each recommendation is in force until the next: at 401 the window starts at 101,
    # after the 40 (0 to 100) and inside the 20 (-> 5 pods, 100 to 200).
    assert run(BOUNDS, 1, series).replicas == 5
    assert run(BOUNDS, 1, [*series[:3], (301, 0)]).replicas == 10   # the 40 until 100


def test_max_scale_up_step_limits_growth() -> None:
    bounds = Bounds(min_replicas=1, max_replicas=10, target=4, max_step=2)
    assert decide(bounds, 1, 40, 0, History()).replicas == 3


def test_scale_to_zero_after_cooldown_and_wake_on_activation() -> None:
    bounds = Bounds(
        min_replicas=0,
        max_replicas=5,
        target=4,
        activation=2,
        stabilization_seconds=0,
        zero_cooldown_seconds=60,
    )
    assert run(bounds, 2, [(0, 8), (10, 0)]).replicas == 1           # cooling down
    assert run(bounds, 2, [(0, 8), (10, 0), (61, 0)]).replicas == 0  # idle for 61 s
    assert run(bounds, 0, [(0, 2)]).replicas == 0                    # not above activation
    assert run(bounds, 0, [(0, 3)]).replicas == 1                    # woken


def test_broker_errors_never_scale_down() -> None:
    assert decide(BOUNDS, 7, None, 0, History()).replicas == 7
    fallback = Bounds(min_replicas=1, max_replicas=10, target=4, fallback=4)
    assert decide(fallback, 2, None, 0, History()).replicas == 4
    assert decide(fallback, 6, None, 0, History()).replicas == 6


def test_restart_does_not_scale_down_for_one_window() -> None:
    """A fresh history (operator restarted) is seeded with the current size."""
    assert decide(BOUNDS, 8, 0, 1000, History()).replicas == 8


# --- scale-down in steps, the percentile floor, the panic window ---------------------

# The spec's defaults (model.Autoscaling): a 60 s window at its 90th percentile, 25 % of
# the pods per step, no scale-down for 6 s after a jump.
STEPPED = Bounds(min_replicas=1, max_replicas=10, target=4, stabilization_seconds=60,
                 zero_cooldown_seconds=120, percentile=90, step_percent=25, panic_seconds=6)


def sizes(bounds: Bounds, current: int, backlogs: list[tuple[float, int | None]],
          history: History | None = None) -> list[int]:
    """The size after each observation, each decision applied."""
    history = history or History()
    out = []
    for now, backlog in backlogs:
        decision = decide(bounds, current, backlog, now, history)
        current, history = decision.replicas, decision.history
        out.append(current)
    return out


def idle(start: float, end: float, every: float = 2.0) -> list[tuple[float, int | None]]:
    """Empty queues observed every ``every`` seconds from ``start`` to ``end``."""
    count = int((end - start) / every) + 1
    return [(start + n * every, 0) for n in range(count)]


def calm(until: float, backlog: int) -> list[tuple[float, int | None]]:
    """The same backlog every 2 s from 0 until before ``until``: a window's history."""
    return [(float(t), backlog) for t in range(0, int(until), 2)]


def test_a_pool_shrinks_by_a_quarter_per_decision_not_in_one_cliff() -> None:
    # One pod's worth for a minute, 40 messages for 10 pods at 60 (a jump: no scale-down
    # until 66), then nothing: the window's 90th percentile is 1 pod from then on.
    after = sizes(STEPPED, 1, [*calm(60, 4), (60, 40), *idle(62, 76)])
    assert after[30:33] == [10] * 3                                   # 60 to 64
    assert after[33:] == [7, 5, 3, 2, 1, 1]   # max(1, ceil(25 %)) fewer each decision


def test_the_percentile_lets_a_short_spike_go_and_holds_a_long_one() -> None:
    bounds = replace(STEPPED, panic_seconds=0)
    two = calm(60, 8)                                    # 2 pods' worth for a minute
    spike = [(60, 40), (62, 40), (64, 8), (66, 8)]       # 10 pods for 4 s of the window
    assert sizes(bounds, 2, [*two, *spike])[-3:] == [10, 7, 5]
    held = [(t, 40) for t in range(60, 80, 2)]           # 10 pods for 20 s
    assert sizes(bounds, 2, [*two, *held, (80, 8), (82, 8)])[-2:] == [10, 10]
    # The maximum (percentile 100) holds even the short spike for the whole window.
    maximum = replace(bounds, percentile=100)
    assert sizes(maximum, 2, [*two, *spike, (122, 8)])[-1] == 10
    assert sizes(maximum, 2, [*two, *spike, (125, 8)])[-1] == 7


def test_the_floor_weighs_recommendations_by_time_not_by_count() -> None:
    """A pool at rest is not decided every cycle (test_rest): a spike observed 30 times
    in 3 s weighs 3 s, one calm observation at either end of 57 s weighs 57 s."""
    recs = (Recommendation(0, 2), *(Recommendation(57 + n / 10, 10) for n in range(30)),
            Recommendation(60, 2))
    assert floor_of(recs, 0, 60, 90) == 2
    assert floor_of(recs, 0, 60, 96) == 10      # 3 s is more than 4 % of 60
    assert floor_of(recs, 0, 60, 100) == 10
    assert floor_of((Recommendation(5, 3),), 0, 5, 90) == 3      # no time: the newest


def test_a_burst_right_after_a_scale_down_comes_back_at_once() -> None:
    history, current = History(), 1
    for now, backlog in [*calm(60, 4), (60, 40), *idle(62, 66)]:
        decision = decide(STEPPED, current, backlog, now, history)
        current, history = decision.replicas, decision.history
    assert current == 7                                  # the first step down, at 66
    burst = decide(STEPPED, current, 40, 68, history)   # the next wave: 10 pods again
    assert burst.replicas == 10                          # at once, no step on the way up
    # It was served within one interval (10 is not twice 7: no panic) and 10 pods were
    # asked for 4 s of the window: the pool goes down again, by one step.
    assert sizes(STEPPED, 10, [(70, 0)], burst.history) == [7]


def test_a_jump_suspends_scale_down_for_the_panic_window() -> None:
    # Percentile 1 and a 0 s window would let go at once; the panic window does not.
    bounds = replace(STEPPED, stabilization_seconds=0, percentile=1, step_percent=100,
                     panic_seconds=30)
    assert sizes(bounds, 2, [(0, 8), (10, 40), (12, 0), (39, 0)]) == [2, 10, 10, 10]
    assert sizes(bounds, 2, [(0, 8), (10, 40), (12, 0), (40, 0)])[-1] == 1
    # Without one, the pool goes back as soon as the backlog is gone.
    assert sizes(replace(bounds, panic_seconds=0), 2, [(0, 8), (10, 40), (12, 0)])[-1] == 1
    # A rise below twice the size is no jump.
    assert sizes(bounds, 4, [(0, 16), (10, 28), (12, 0)]) == [4, 7, 1]
    # A jump is the backlog's: one that the maximum caps below twice the size is one too.
    assert sizes(replace(bounds, max_replicas=8), 6,
                 [(0, 24), (10, 48), (12, 0), (39, 0)]) == [6, 8, 8, 8]


def test_waking_from_zero_is_a_jump_and_zero_cooldown_still_holds_one_pod() -> None:
    bounds = replace(STEPPED, min_replicas=0, activation=2, stabilization_seconds=0,
                     zero_cooldown_seconds=60, panic_seconds=10)
    assert sizes(bounds, 0, [(0, 2)]) == [0]                       # not above activation
    woken = sizes(bounds, 0, [(0, 3), (5, 0), (11, 0), (61, 0)])
    assert woken == [1, 1, 1, 0]     # held by the panic, then by the cooldown, then zero


def test_restart_in_the_middle_holds_for_one_window_whatever_the_percentile() -> None:
    """After a restart the history is empty: the pool is held at its size for one window,
    even at percentile 1 with a step of 100 %."""
    bounds = replace(STEPPED, percentile=1, step_percent=100)
    after = sizes(bounds, 8, idle(1000, 1060))
    assert after[:-1] == [8] * 30
    assert after[-1] == 1                                          # 1060: a window on


def test_a_clock_going_backwards_starts_the_history_again() -> None:
    history = decide(STEPPED, 8, 0, 1000, History()).history
    before = decide(STEPPED, 8, 0, 500, history)
    assert before.replicas == 8
    assert before.history.recommendations[0] == Recommendation(500, 8)
    assert sizes(STEPPED, 8, idle(502, 558), before.history)[-1] == 8
    assert sizes(STEPPED, 8, idle(502, 560), before.history)[-1] == 6


@pytest.mark.parametrize("step_percent", [1, 25, 100])
def test_every_step_removes_at_least_one_pod_and_at_most_its_share(step_percent: int) -> None:
    bounds = replace(STEPPED, stabilization_seconds=0, panic_seconds=0,
                     step_percent=step_percent)
    current, history, now = 10, History(), 0.0
    while current > 1:
        now += 2
        decision = decide(bounds, current, 0, now, history)
        assert 1 <= current - decision.replicas <= max(1, -(-current * step_percent // 100))
        current, history = decision.replicas, decision.history
    assert step_percent < 100 or now == 2                          # 100 %: one step


def test_the_strangest_values_the_schema_admits() -> None:
    huge = Bounds(min_replicas=0, max_replicas=MAX_INT32, target=1, activation=MAX_INT32,
                  stabilization_seconds=MAX_INT32, zero_cooldown_seconds=MAX_INT32,
                  tolerance=1.0, max_step=MAX_INT32, percentile=100, step_percent=100,
                  panic_seconds=MAX_INT32)
    assert decide(huge, 0, MAX_INT32, 0, History()).replicas == 0   # not above activation
    awake = replace(huge, activation=0, tolerance=0.0)
    up = decide(awake, 0, MAX_INT32, 0, History())
    assert up.replicas == MAX_INT32
    # Idle right after: the panic and the window hold it; then one cliff (step 100 %,
    # the cooldown over too).
    assert decide(awake, MAX_INT32, 0, 1, up.history).replicas == MAX_INT32
    late = 2.0 * MAX_INT32 + 1
    history = decide(awake, MAX_INT32, 0, late - 1, up.history).history
    assert decide(awake, MAX_INT32, 0, late + MAX_INT32, history).replicas == 0
    zero = Bounds(min_replicas=0, max_replicas=0, target=1, stabilization_seconds=0,
                  zero_cooldown_seconds=0, tolerance=0.0, percentile=1, step_percent=1)
    assert decide(zero, 0, MAX_INT32, 0, History()).replicas == 0


# --- properties --------------------------------------------------------------------

bounds_strategy = st.builds(
    lambda lo, span, target, act, win, cool, tol, step, pct, down, panic: Bounds(
        min_replicas=lo,
        max_replicas=lo + span,
        target=target,
        activation=act,
        stabilization_seconds=win,
        zero_cooldown_seconds=cool,
        tolerance=tol,
        max_step=step,
        percentile=pct,
        step_percent=down,
        panic_seconds=panic,
    ),
    st.integers(0, 5),
    st.integers(1, 20),
    st.integers(1, 50),
    st.integers(0, 10),
    st.sampled_from([0.0, 30.0, 300.0]),
    st.sampled_from([0.0, 60.0]),
    st.sampled_from([0.0, 0.1, 0.5]),
    st.integers(0, 3),
    st.sampled_from([1, 50, 90, 100]),
    st.sampled_from([1, 25, 100]),
    st.sampled_from([0.0, 6.0, 30.0]),
)
observations = st.lists(st.tuples(st.integers(0, 100), st.one_of(st.none(), st.integers(0, 5000))),
                        min_size=1, max_size=12)


def _timeline(obs: list[tuple[float, int | None]]) -> list[tuple[float, int | None]]:
    now, out = 0.0, []
    for step, backlog in obs:
        now += step
        out.append((now, backlog))
    return out


@given(bounds_strategy, observations, st.data())
def test_never_outside_bounds(bounds: Bounds, obs: list, data: st.DataObject) -> None:
    current = data.draw(st.integers(bounds.min_replicas, bounds.max_replicas))
    history = History()
    for now, backlog in _timeline(obs):
        decision = decide(bounds, current, backlog, now, history)
        assert bounds.min_replicas <= decision.replicas <= bounds.max_replicas
        current, history = decision.replicas, decision.history


def _floor_by_seconds(recommendations: Sequence[tuple[float, int]], start: float,
                      now: float, percentile: int) -> int:
    """The window's floor counted second by second (whole-second times): the highest size
    in force during more than 100 - percentile % of the seconds."""
    seconds = [[r for t, r in recommendations if t <= s][-1]
               for s in range(int(start), int(now))]
    for size in sorted(set(seconds), reverse=True):
        if sum(1 for x in seconds if x >= size) > len(seconds) * (100 - percentile) / 100:
            return size
    return recommendations[-1][1]


@given(bounds_strategy, observations, st.data())
def test_scale_down_respects_the_panic_the_floor_and_the_step(
        bounds: Bounds, obs: list, data: st.DataObject) -> None:
    current = data.draw(st.integers(bounds.min_replicas, bounds.max_replicas))
    history, seen = History(), 0.0
    for now, backlog in _timeline(obs):
        decision = decide(bounds, current, backlog, now, history)
        if not history.recommendations:
            seen = now
        if decision.replicas < current and backlog is not None:
            assert history.panic_until is None or now >= history.panic_until
            start = now - bounds.stabilization_seconds
            recs = list(decision.history.recommendations)
            assert start >= seen   # never within a window of the first sight
            assert decision.replicas >= min(
                current, _floor_by_seconds(recs, start, now, bounds.percentile))
            assert current - decision.replicas <= max(
                1, -(-current * bounds.step_percent // 100))
        current, history = decision.replicas, decision.history


@given(bounds_strategy, st.integers(0, 30), st.integers(0, 5000), st.integers(0, 5000))
def test_monotone_in_backlog(bounds: Bounds, current: int, a: int, b: int) -> None:
    current = bounds.clamp(current)
    low, high = sorted((a, b))
    assert (decide(bounds, current, low, 0, History()).replicas
            <= decide(bounds, current, high, 0, History()).replicas)


@given(bounds_strategy, observations, st.integers(0, 30))
def test_deterministic(bounds: Bounds, obs: list, current: int) -> None:
    def replay() -> list[int]:
        now_current, history, sizes = bounds.clamp(current), History(), []
        for now, backlog in _timeline(obs):
            decision = decide(bounds, now_current, backlog, now, history)
            sizes.append(decision.replicas)
            now_current, history = decision.replicas, decision.history
        return sizes

    assert replay() == replay()
