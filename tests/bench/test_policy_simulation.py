"""The policy simulation takes the replay's traces: every one given with ``--trace``."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy_simulation import main


def test_every_given_trace_is_simulated(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("one", "two"):
        (tmp_path / f"{name}-trace.csv").write_text(
            "# a comment\noffset_seconds,tasks,task_seconds\n0,3,1\n2,1,1\n")
    main(["--trace", str(tmp_path / "one-trace.csv"), "--trace", str(tmp_path / "two-trace.csv"),
          "--tail", "5"])
    rows = capsys.readouterr().out.splitlines()[2:-1]
    assert [row.split("  ")[0] for row in rows] == ["one"] * 3 + ["two"] * 3
