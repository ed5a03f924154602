"""The search scores every combination against KEDA-like as the node measured it, takes
the model's known bias off our waits when told, and finds the floor of a pool that never
shrinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from _traces import Row
from metamapper_operator.model import Autoscaling
from policy_search import MEASURED, NEVER_SHRINKS, Scored, Settings, main
from policy_simulation import Outcome, Startup, Timing, ours, replay_pool, simulate


def test_the_margin_is_the_worst_ratio_to_the_goal() -> None:
    """0.5x KEDA-like's wait and 0.8x its worker-seconds both give 1; the worst counts."""
    bursty, ramp = MEASURED["bursty"], MEASURED["ramp"]
    scored = Scored(Settings.of(Autoscaling()),
                    {"bursty": Outcome(0.5 * bursty.p95_wait, 0.4 * bursty.worker_seconds),
                     "ramp": Outcome(0.1, 0.88 * ramp.worker_seconds)}, {})
    assert scored.margin == pytest.approx(1.1)
    assert scored.ratios("bursty") == pytest.approx((0.5, 0.4))


def test_a_bias_comes_off_our_modelled_wait() -> None:
    bursty = MEASURED["bursty"]
    scored = Scored(Settings.of(Autoscaling()),
                    {"bursty": Outcome(0.5 * bursty.p95_wait + 2.9, 0.0)}, {"bursty": 2.9})
    assert scored.margin == pytest.approx(1.0)


def test_settings_are_the_crds_fields() -> None:
    settings = Settings(45, 75, 10, 20, 1.0)
    assert Settings.of(settings.autoscaling()) == settings
    assert Settings.of(Autoscaling()) == Settings(60, 90, 25, 6, 2.0)


def sizes(auto: Autoscaling) -> list[int]:
    """Our pool's size at every decision over 200 s after 16 tasks of 3 s."""
    decide, seen = ours(replay_pool(auto)), []

    def deciding(pods: int, ready: int, waiting: int, in_flight: int, now: float) -> int:
        seen.append(decide(pods, ready, waiting, in_flight, now))
        return seen[-1]
    simulate((Row(0.0, 16, 3.0),), deciding, Timing(2.0), True, Startup(), 200.0)
    return seen


def test_a_pool_that_never_shrinks_holds_its_peak() -> None:
    """After a burst the pool keeps its peak to the end, where the defaults shrink it."""
    never = sizes(NEVER_SHRINKS)
    assert never[-1] == max(never) == 8
    assert sizes(Autoscaling())[-1] == 1


def test_every_combination_is_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    trace = tmp_path / "ramp-trace.csv"
    trace.write_text("offset_seconds,tasks,task_seconds\n0,3,1\n2,1,1\n")
    main(["--trace", str(trace), "--window", "30,60", "--percentile", "90",
          "--step", "25", "--panic", "6", "--target-wait", "2", "--phases", "1",
          "--seeds", "1", "--best", "2"])
    out = capsys.readouterr().out
    assert "2 combinations, " in out   # 30 s, and 60 s: the defaults' (shown once)
    assert out.count("defaults: window 60, p90, step 25 %, panic 6, wait 2") == 1
