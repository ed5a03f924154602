"""The trace replay's parts that need no cluster: each trace's fleets in namespaces of their
own, deleted again whatever happens, the per-trace verdict and the summary table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from _traces import Row, Trace
from metamapper_operator.model import Autoscaling, parse
from trace_replay import (
    FIXED,
    KEDA,
    OURS,
    Comparison,
    Options,
    Outcome,
    configs,
    namespaces,
    picture_path,
    pool_spec,
    print_summary,
    ratio,
)


def outcome(label: str, p95: float, worker_seconds: float, lost: int = 0) -> Outcome:
    return Outcome(label, 100, p95 / 2, p95, worker_seconds, 8, lost)


def comparison(ours_p95: float, keda_p95: float, ours_ws: float = 800.0,
               keda_ws: float = 1000.0, lost: tuple[int, int, int] = (0, 0, 0)) -> Comparison:
    return Comparison("beat", (outcome(OURS, ours_p95, ours_ws, lost[0]),
                               outcome(KEDA, keda_p95, keda_ws, lost[1]),
                               outcome(FIXED, 0.1, 4000.0, lost[2])))


def test_the_goal_is_met_at_half_the_wait_and_four_fifths_the_worker_seconds() -> None:
    met = comparison(5.0, 10.0, 800.0, 1000.0)
    assert (met.wait_ratio, met.worker_seconds_ratio) == (0.5, 0.8)
    assert met.verdict() == "yes"
    assert met.line() == ("p95 wait vs KEDA-like: 0.50x, worker-seconds vs KEDA-like: 0.80x; "
                          "goal met: yes")


def test_each_shortfall_is_named() -> None:
    assert comparison(6.0, 10.0).verdict() == "no: p95 wait 0.60x > 0.5x"
    assert comparison(4.0, 10.0, 980.0).verdict() == "no: worker-seconds 0.98x > 0.8x"
    assert comparison(4.0, 10.0, lost=(2, 0, 0)).verdict() == "no: 2 lost"
    assert comparison(6.0, 10.0, 900.0, lost=(1, 0, 0)).verdict() == (
        "no: p95 wait 0.60x > 0.5x, worker-seconds 0.90x > 0.8x, 1 lost")


def test_only_our_lost_tasks_miss_the_goal() -> None:
    assert comparison(4.0, 10.0, lost=(0, 3, 1)).verdict() == "yes"


def test_no_wait_at_all_meets_the_wait_goal_and_no_task_started_misses_it() -> None:
    nothing_waited = comparison(0.0, 0.0)
    assert nothing_waited.wait_ratio is None and nothing_waited.verdict() == "yes"
    none_started = comparison(math.nan, 10.0)
    assert none_started.wait_ratio is None
    assert none_started.verdict() == "no: p95 wait - > 0.5x"


def test_a_ratio_means_nothing_over_zero_or_nan() -> None:
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None and ratio(math.nan, 1.0) is None
    assert ratio(1.0, math.nan) is None


def test_the_summary_has_a_row_per_trace(capsys: pytest.CaptureFixture[str]) -> None:
    first = comparison(5.8, 13.2, 1645.0, 1681.0)
    second = Comparison("ramp", (outcome(OURS, math.nan, 10.0, 4), outcome(KEDA, 3.0, 20.0),
                                 outcome(FIXED, 0.0, 30.0)))
    assert first.summary_row() == ["beat", "5.8", "13.2", "0.44x", "0.98x", 0, 0, 0,
                                   "no: worker-seconds 0.98x > 0.8x"]
    print_summary([first, second])
    heading, header, _, *rows = capsys.readouterr().out.strip().splitlines()
    assert "at most 0.5x KEDA-like's at most 0.8x its worker-seconds" in heading
    assert header.split("  ")[-4:] == [
        "our defaults lost", "KEDA-like lost", "fixed at max lost", "goal met"]
    assert rows[0].split()[:8] == ["beat", "5.8", "13.2", "0.44x", "0.98x", "0", "0", "0"]
    assert rows[1].split()[:8] == ["ramp", "-", "3.0", "-", "0.50x", "4", "0", "0"]
    assert rows[1].endswith("no: p95 wait - > 0.5x, 4 lost")


def test_each_trace_gets_namespaces_and_a_picture_of_its_own(tmp_path: Path) -> None:
    first, second = (configs(8, None, 2.0, f"replay-{n}") for n in (1, 2))
    assert [c.namespace for c in first] == ["replay-1-ours", "replay-1-keda", "replay-1-fixed"]
    assert not {c.namespace for c in first} & {c.namespace for c in second}
    trace = Trace("beat", tmp_path / "beat-trace.csv", (Row(0, 1, 1), Row(177, 3, 1)))
    assert picture_path(tmp_path, trace) == tmp_path / "trace-replay-beat.png"
    assert Options(330.0, 8, None, 2.0, tmp_path).horizon(trace) == 507.0


def test_our_fleet_is_scaled_by_the_defaults() -> None:
    ours = next(c for c in configs(8, None, 2.0, "replay-1") if c.label == OURS)
    body = {"apiVersion": "metamapper.io/v1alpha1", "kind": "Metamapper",
            "metadata": {"namespace": "replay-1-ours", "name": "replay"},
            "spec": {"image": "workload", "broker": {"url": "redis://redis:6379/0"},
                     "scheduler": {"enabled": False}, "pools": [pool_spec(ours, 8)]}}
    (pool,) = parse(body).pools
    assert pool.autoscaling == Autoscaling()
    assert (pool.concurrency, pool.min_replicas, pool.max_replicas) == (2, 1, 8)


class Recorder:
    """A stand-in for the cluster: what was applied and which kubectl commands ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def apply(self, objects: list[dict[str, Any]]) -> None:
        self.calls.append(("apply", *(o["metadata"]["name"] for o in objects)))

    def kubectl(self, *args: str) -> str:
        self.calls.append(args)
        return ""


def test_a_traces_namespaces_are_deleted_and_waited_for_also_when_it_fails() -> None:
    kube = Recorder()
    with pytest.raises(RuntimeError), namespaces(kube, ["a", "b"]):  # type: ignore[arg-type]
        raise RuntimeError("the replay failed")
    assert kube.calls[0] == ("apply", "a", "b")
    assert kube.calls[1][:4] == ("delete", "namespace", "a", "b")
    assert "--wait=true" in kube.calls[1]

