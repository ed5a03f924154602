"""The benchmarks' traces: read with their comments, found by name in ``bench/``, and the
generated ones exactly what ``bench/_traces.py`` makes."""

from __future__ import annotations

from pathlib import Path

import pytest

import _traces
from _traces import BEAT_MINUTE_SECONDS, FANOUTS, GENERATED, Row, discover, load, read_trace


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_trace_is_read_without_its_comment_lines(tmp_path: Path) -> None:
    trace = write(tmp_path / "a-trace.csv", "# made by hand\n# twice\n"
                  "offset_seconds,tasks,task_seconds\n0,2,1.5\n10,0,3\n10,4,2\n")
    assert read_trace(trace) == [Row(0.0, 2, 1.5), Row(10.0, 0, 3.0), Row(10.0, 4, 2.0)]


@pytest.mark.parametrize("body", ["", "5,1,2\n0,1,2\n"])
def test_an_empty_or_unordered_trace_is_refused(tmp_path: Path, body: str) -> None:
    trace = write(tmp_path / "a-trace.csv", "offset_seconds,tasks,task_seconds\n" + body)
    with pytest.raises(SystemExit, match="in the order of their offsets"):
        read_trace(trace)


def test_every_trace_in_the_folder_is_found_by_its_name(tmp_path: Path) -> None:
    for name in ("waves-trace.csv", "beat-trace.csv", "notes.csv", "trace.csv"):
        write(tmp_path / name, "offset_seconds,tasks,task_seconds\n0,1,1\n")
    assert [path.name for path in discover(tmp_path)] == ["beat-trace.csv", "waves-trace.csv"]


def test_without_paths_every_bench_trace_is_loaded_at_least_four() -> None:
    traces = load(None)
    assert [trace.name for trace in traces] == sorted(trace.name for trace in traces)
    assert {"bursty", "beat", "waves", "ramp"} <= {trace.name for trace in traces}
    bursty = next(trace for trace in traces if trace.name == "bursty")
    assert bursty.path == _traces.BENCH / "bursty-trace.csv" and bursty.last_offset == 180


def test_given_paths_are_loaded_in_their_order_and_named_after_their_files(
        tmp_path: Path) -> None:
    a = write(tmp_path / "z-trace.csv", "offset_seconds,tasks,task_seconds\n0,1,1\n7,1,1\n")
    b = write(tmp_path / "mine.csv", "offset_seconds,tasks,task_seconds\n0,3,2\n")
    traces = load([a, b])
    assert [(t.name, t.last_offset, t.rows) for t in traces] == [
        ("z", 7.0, (Row(0, 1, 1), Row(7, 1, 1))), ("mine", 0.0, (Row(0, 3, 2),))]


def test_two_traces_of_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    paths = [write(folder / "a-trace.csv", "offset_seconds,tasks,task_seconds\n0,1,1\n")
             for folder in (tmp_path, tmp_path / "other")]
    with pytest.raises(SystemExit, match="the same name: a"):
        load(paths)


def test_no_trace_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no trace given"):
        load([], tmp_path)


@pytest.mark.parametrize("generated", GENERATED, ids=lambda g: g.name)
def test_each_generated_trace_is_committed_as_the_module_makes_it(
        generated: _traces.Generated) -> None:
    assert generated.path.read_text() == generated.text(), (
        f"{generated.path.name} is stale: run python bench/_traces.py")
    assert tuple(read_trace(generated.path)) == tuple(generated.make())


def test_the_beat_trace_follows_the_beat_schedule() -> None:
    rows = _traces.beat()
    minutes = sorted({row.offset for row in rows})
    assert minutes == [minute * BEAT_MINUTE_SECONDS for minute in range(60)]
    revisioner = FANOUTS["queue-revisioner-runs"]
    waves = [row.offset for row in rows
             if (row.tasks, row.seconds) == (revisioner.most, revisioner.seconds)]
    assert waves == [15 * BEAT_MINUTE_SECONDS, 45 * BEAT_MINUTE_SECONDS]   # :15 and :45
    own = {row.offset: row.tasks for row in rows if row.seconds == _traces.BEAT_TASK_SECONDS}
    # Every minute the heartbeat, the checks and the usage jobs; at minute 0 of hour 0 all
    # nine entries but the revisioner's queueing; at :20 the domain verifications too.
    assert own[3.0] == 3 and own[0.0] == 8 and own[20 * BEAT_MINUTE_SECONDS] == 4


def test_the_seeded_traces_are_the_same_every_time_and_differ_by_seed() -> None:
    assert _traces.ramp() == _traces.ramp() != _traces.ramp(seed=2)
    assert _traces.beat() == _traces.beat() != _traces.beat(seed=2)
