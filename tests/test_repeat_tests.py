"""hack/repeat_tests.py runs its selection the way the Makefile runs the suite: with
``--workers 2`` in two processes (``pytest -n 2``), each run's tests counted all the same."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SELECTION = "tests/devenv/test_waiting.py"   # quick, and needs no service


def repeat(reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "hack" / "repeat_tests.py"), "--runs", "1",
                           "--reports", str(reports), *args, "--", SELECTION],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_each_run_goes_to_two_processes_with_two_workers(tmp_path: Path) -> None:
    done = repeat(tmp_path, "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    log = (tmp_path / "run-1.log").read_text()
    assert "2 workers [" in log   # xdist's line: how many processes ran how many tests
    serial = repeat(tmp_path / "serial")
    assert serial.returncode == 0, serial.stdout + serial.stderr
    assert "workers [" not in (tmp_path / "serial" / "run-1.log").read_text()
    assert passed(done.stdout) == passed(serial.stdout) > 0


def passed(output: str) -> int:
    """The count of the run's line: ``run 1/1 (...): N passed in ...``."""
    line = next(line for line in output.splitlines() if line.startswith("run 1/1"))
    return int(line.split("): ", 1)[1].split()[0])
