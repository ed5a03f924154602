"""The scaling policy: table tests for each rule, property tests for its guarantees."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metamapper_operator.autoscale.policy import Bounds, Decision, History, decide

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
    series: list[tuple[float, int | None]] = [(0, 40), (100, 20), (200, 0), (301, 0)]
    # At 301 the 40 has left the window; 20 (-> 5 pods) is still in it.
    assert run(BOUNDS, 1, series).replicas == 5


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


# --- properties --------------------------------------------------------------------

bounds_strategy = st.builds(
    lambda lo, span, target, act, win, cool, tol, step: Bounds(
        min_replicas=lo,
        max_replicas=lo + span,
        target=target,
        activation=act,
        stabilization_seconds=win,
        zero_cooldown_seconds=cool,
        tolerance=tol,
        max_step=step,
    ),
    st.integers(0, 5),
    st.integers(1, 20),
    st.integers(1, 50),
    st.integers(0, 10),
    st.sampled_from([0.0, 30.0, 300.0]),
    st.sampled_from([0.0, 60.0]),
    st.sampled_from([0.0, 0.1, 0.5]),
    st.integers(0, 3),
)
observations = st.lists(st.tuples(st.floats(0, 100), st.one_of(st.none(), st.integers(0, 5000))),
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


@given(bounds_strategy, observations, st.data())
def test_never_scales_down_inside_the_window(bounds: Bounds, obs: list,
                                             data: st.DataObject) -> None:
    current = data.draw(st.integers(bounds.min_replicas, bounds.max_replicas))
    history = History()
    for now, backlog in _timeline(obs):
        decision = decide(bounds, current, backlog, now, history)
        if decision.replicas < current:
            # Down only as far as the highest recommendation still inside the window.
            window = [r for t, r in decision.history.recommendations
                      if t >= now - bounds.stabilization_seconds]
            assert decision.replicas >= max(window)
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
