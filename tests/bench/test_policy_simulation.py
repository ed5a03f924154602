"""The policy simulation takes the replay's traces, the replay's pool, and decides when the
replay's configurations decide."""

from __future__ import annotations

from pathlib import Path

import pytest

from _traces import Row
from metamapper_operator.model import Autoscaling
from policy_simulation import Timing, main, replay_pool, simulate


def test_every_given_trace_is_simulated(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("one", "two"):
        (tmp_path / f"{name}-trace.csv").write_text(
            "# a comment\noffset_seconds,tasks,task_seconds\n0,3,1\n2,1,1\n")
    main(["--trace", str(tmp_path / "one-trace.csv"), "--trace", str(tmp_path / "two-trace.csv"),
          "--tail", "5", "--phases", "2"])
    table = capsys.readouterr().out.split("\n\n")[0].splitlines()[2:]
    assert [row.split("  ")[0] for row in table] == ["one"] * 5 + ["two"] * 5


def test_ours_is_the_replays_pool_with_the_defaults() -> None:
    pool = replay_pool()
    assert pool.autoscaling == Autoscaling()
    assert (pool.concurrency, pool.min_replicas, pool.max_replicas) == (2, 1, 8)


def decisions(timing: Timing, sizes: dict[float, int]) -> list[tuple[float, int]]:
    """When a configuration that asks for ``sizes`` (by time; else its size) decides over
    60 s of one task, with how many waiting."""
    seen: list[tuple[float, int]] = []

    def decider(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        seen.append((now, waiting))
        return sizes.get(now, pods)
    simulate((Row(0.0, 1, 1.0), Row(15.0, 10, 30.0)), decider, timing, False, 4.0, 45.0)
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
