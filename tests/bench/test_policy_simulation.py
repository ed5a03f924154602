"""The policy simulation takes the replay's traces, the replay's pool, and decides when the
replay's configurations decide, from when they decide in the replay; its pods start as the
replay's did. Our pool warms up before its fleet's beat as the operator would warm it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from _traces import Row
from metamapper_beat import SCHEDULE
from metamapper_operator.autoscale import waves
from metamapper_operator.model import Autoscaling
from policy_simulation import (
    FIXED,
    KEDA_ANY,
    KEDA_REPLAY,
    OURS,
    BeatWarmUp,
    Decider,
    Spread,
    Startup,
    Timing,
    configurations,
    main,
    ours,
    production_twin,
    replay_pool,
    run,
    simulate,
)


def test_every_given_trace_is_simulated(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("one", "two"):
        (tmp_path / f"{name}-trace.csv").write_text(
            "# a comment\noffset_seconds,tasks,task_seconds\n0,3,1\n2,1,1\n")
    main(["--trace", str(tmp_path / "one-trace.csv"), "--trace", str(tmp_path / "two-trace.csv"),
          "--tail", "5", "--phases", "2"])
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()[2:]
    assert [row.split("  ")[0] for row in table] == ["one"] * 6 + ["two"] * 6


def test_ours_is_the_replays_pool_with_the_defaults() -> None:
    pool = replay_pool()
    assert pool.autoscaling == Autoscaling()
    assert (pool.concurrency, pool.min_replicas, pool.max_replicas) == (2, 1, 8)


def test_the_window_is_the_replays() -> None:
    """``--window`` sets our scale-down window as the replay's ``--window`` does."""
    assert replay_pool(window=90).autoscaling == Autoscaling(
        scale_down_stabilization_seconds=90)


def test_the_maximum_is_every_configurations() -> None:
    """``--max-replicas`` caps ours, KEDA-like and the fixed fleet alike, as the replay's
    does: a backlog of 100 takes each to 12 pods, none further."""
    chosen = {config.label: config
              for config in configurations(2.0, 1, 0.0, 0.0, max_replicas=12)}
    assert replay_pool(max_replicas=12).max_replicas == 12
    for label in (OURS, KEDA_REPLAY, KEDA_ANY, FIXED):
        decider, pods = chosen[label].make(), 1
        for now in range(0, 300, 15):
            pods = decider(pods, pods, 100, 0, float(now))
        assert pods == 12, label
    assert chosen[FIXED].initial == 12


def test_a_seed_draws_other_pod_starts() -> None:
    """The same seed repeats a run's figures; another draws other pod starts."""
    (config,) = (c for c in configurations(2.0, 2, 0.0, 16.0) if c.label == OURS)
    trace = (Row(0.0, 20, 3.0), Row(40.0, 20, 3.0))
    by_seed = [run(trace, config, Startup(), 10.0, seed) for seed in (0, 0, 1, 2)]
    assert by_seed[0] == by_seed[1]
    assert len(set(by_seed[1:])) == 3


def test_the_twin_runs_the_default_beat_into_its_pool() -> None:
    """The fleet as production runs it: its scheduler on and a metastore named, so beat
    keeps every entry of the default schedule, each routed to a queue of its pool."""
    fleet = production_twin()
    beat = waves.beat_of(fleet)
    assert beat is not None and not beat.ignored
    assert sorted(timed.entry for timed in beat.entries) == sorted(e.name for e in SCHEDULE)
    (pool,) = fleet.pools
    assert {timed.queue for timed in beat.entries} <= set(pool.queues)
    assert replace(pool, queues=replay_pool().queues) == replay_pool()


def test_the_crds_warm_up_is_covered_by_the_replays_minimum() -> None:
    """warmUp.replicas defaults to 1, the replay's minReplicas: the warm-up never raises
    the pool, whatever the time."""
    warm_up = BeatWarmUp.of(production_twin(), poll=2.0)
    assert warm_up is not None
    assert all(warm_up.at(now).covered for now in (0.0, 900.0, 1800.0, 2700.0))


def test_the_default_beat_keeps_a_warmed_pool_warm_at_all_times() -> None:
    """Entries that fire every minute: the floor is the same at any time of the day."""
    warm_up = BeatWarmUp.of(production_twin(warm_up_replicas=3), poll=2.0)
    assert warm_up is not None
    warmings = [warm_up.at(hours * 3600.0 + minutes * 60.0)
                for hours in range(24) for minutes in range(0, 60, 7)]
    assert {warming.floor for warming in warmings} == {3}
    assert all("create-check-executions" in warming.continuous for warming in warmings)


def test_a_fleet_without_a_scheduler_has_no_warm_up() -> None:
    assert BeatWarmUp.of(production_twin(scheduler=False), poll=2.0) is None


def smallest_after(decider: Decider, after: float) -> int:
    """Our pool's smallest size asked for after ``after`` s, after 16 tasks of 5 s at 0 s
    and one of 1 s at 100 s."""
    sizes: dict[float, int] = {}

    def deciding(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        sizes[now] = decider(pods, ready, waiting, in_flight, now)
        return sizes[now]
    simulate((Row(0.0, 16, 5.0), Row(100.0, 1, 1.0)), deciding, Timing(2.0), True,
             FOUR_SECONDS, 120.0)
    return min(size for now, size in sizes.items() if now > after)


def test_the_warm_up_floor_holds_the_pool() -> None:
    """A warm-up of 3 keeps 3 pods after the burst, where the pool without it falls to 1."""
    twin = production_twin(warm_up_replicas=3)
    (pool,) = twin.pools
    assert smallest_after(ours(pool, BeatWarmUp.of(twin, poll=2.0)), after=0.0) == 3
    assert smallest_after(ours(pool), after=120.0) == 1


FOUR_SECONDS = Startup(ready=Spread(4.0, 4.0), lag=Spread(0.0, 0.0))


def decisions(timing: Timing, sizes: dict[float, int]) -> list[tuple[float, int]]:
    """When a configuration that asks for ``sizes`` (by time; else its size) decides over
    60 s of one task, with how many waiting."""
    seen: list[tuple[float, int]] = []

    def decider(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        seen.append((now, waiting))
        return sizes.get(now, pods)
    simulate((Row(0.0, 1, 1.0), Row(15.0, 10, 30.0)), decider, timing, False, FOUR_SECONDS,
             45.0)
    return seen


def test_a_row_that_arrives_just_after_a_sync_waits_for_the_next() -> None:
    assert decisions(Timing(15.0), {})[:3] == [(0.0, 0), (15.0, 8), (30.0, 8)]
    assert decisions(Timing(15.0, phase=14.75), {})[:2] == [(14.75, 0), (29.75, 8)]


def test_a_sync_that_scales_moves_the_later_ones() -> None:
    assert [now for now, _ in decisions(Timing(15.0, drift=0.5), {15.0: 2})] == [
        0.0, 15.0, 30.5, 45.5]


def test_phases_are_spread_over_the_interval_at_whole_ticks() -> None:
    assert [t.phase for t in Timing(2.0).spread(8)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25,
                                                         1.5, 1.75]
    assert [t.phase for t in Timing(15.0).spread(4)] == [0.0, 3.75, 7.5, 11.25]


def test_a_start_is_one_figure_or_a_range() -> None:
    assert Spread.parse("4") == Spread(4.0, 4.0)
    assert Spread.parse("6.5-12.5") == Spread(6.5, 12.5)
    with pytest.raises(ValueError):
        Spread.parse("12.5-6.5")


def test_a_worker_takes_tasks_before_it_counts_ready() -> None:
    """Ready 5 s after it is asked for, consuming 2 s before: its tasks wait 3 s, and it
    counts from 5 s on."""
    outcome = simulate((Row(0.0, 2, 10.0),), lambda *_: 1, Timing(2.0), False,
                       Startup(ready=Spread(5.0, 5.0), lag=Spread(2.0, 2.0)), 10.0, initial=0)
    assert (outcome.p95_wait, outcome.worker_seconds) == (3.0, 5.0)


def pods_before(at: float, head_start: float) -> tuple[int, int]:
    """Our pool's largest size on the bursty trace's first burst (14 tasks of 5 s at 20 s),
    and its size just before ``at``, when our operator decided from ``head_start`` seconds
    before the trace."""
    sizes: dict[float, int] = {}

    def seen(decider: Decider) -> Decider:
        def deciding(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
            sizes[now] = decider(pods, ready, waiting, in_flight, now)
            return sizes[now]
        return deciding
    simulate((Row(20.0, 14, 5.0), Row(at, 1, 1.0)), seen(ours(replay_pool())),
             Timing(2.0, head_start=head_start), True, FOUR_SECONDS, 10.0)
    return max(sizes.values()), sizes[max(now for now in sizes if now < at)]


def test_the_history_begins_before_the_trace_as_in_the_replay() -> None:
    """The replay's operator has decided for 16 s when the trace begins: its 60 s window is
    full by 44 s, and the pool may shrink before a burst at 60 s; begun with the trace,
    the window would hold the pool at its size until then."""
    peak, before = pods_before(60.0, head_start=16.0)
    assert peak > 1 and before < peak
    assert pods_before(60.0, head_start=0.0) == (peak, peak)


@pytest.mark.parametrize("timing", [Timing(2.0, head_start=16.0), Timing(15.0, phase=14.75)])
def test_the_trace_is_served_and_counted_from_its_start(timing: Timing) -> None:
    """Whether the first decision comes before the trace or after its start."""
    outcome = simulate((Row(0.0, 1, 1.0),), lambda *_: 1, timing, True, FOUR_SECONDS, 10.0)
    assert (outcome.p95_wait, outcome.worker_seconds) == (0.0, 10.0)
