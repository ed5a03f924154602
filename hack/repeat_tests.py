"""Run the timing-dependent tests several times in a row, on a quiet or a loaded machine.

A test that waits for a real system (the node, the control plane, a worker's drain) can
pass on the machine it was written on and race on a faster or a slower one. This runs the
tests marked ``timing`` (see ``tests/conftest.py``) ``--runs`` times; with ``--busy N``,
N busy loops (one process each) keep the cores occupied for the whole time, standing in
for a slower machine. It prints one line per run and a summary, and exits non-zero if any
run failed::

    .venv/bin/python hack/repeat_tests.py --runs 5             # quiet
    .venv/bin/python hack/repeat_tests.py --runs 5 --busy 2    # both cores kept busy
    .venv/bin/python hack/repeat_tests.py --runs 5 --workers 2 # each run in two processes

``--workers N`` runs each run as ``make test TEST_WORKERS=N`` runs the suite: ``pytest -n N``
(the node's tests and the RBAC matrix each in one process, tests/scheduling.py); 1, the
default, is plain pytest. Extra arguments after ``--`` go to pytest (e.g.
``-- tests/e2e/test_faults.py``, which replaces the ``-m timing`` selection).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = REPO / ".venv" / "bin" / "pytest"
BUSY_LOOP = "while True:\n    pass\n"


@dataclass(frozen=True)
class Load:
    """The machine's one-minute load average over a run: how quiet it really was."""

    mean: float
    peak: float


@dataclass(frozen=True)
class RunResult:
    number: int
    seconds: float
    passed: int
    failed: list[str]
    load: Load

    @property
    def ok(self) -> bool:
        return not self.failed and self.passed > 0


@contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """``count`` processes that each keep one core busy until the block ends."""
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def outcome(report: Path) -> tuple[int, list[str]]:
    """Passed count and failed test ids from a JUnit XML report."""
    passed, failed = 0, []
    for case in ET.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(name)
        elif case.find("skipped") is None:
            passed += 1
    return passed, failed


class LoadSampler:
    """Samples ``os.getloadavg()`` every ``interval`` seconds while the block runs."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def load(self) -> Load:
        return Load(sum(self.samples) / len(self.samples), max(self.samples))


def workers_args(workers: int) -> list[str]:
    """pytest's arguments for ``workers`` processes, as the Makefile's ``TEST_WORKERS``."""
    return [] if workers == 1 else ["-n", str(workers)]


def run_once(number: int, pytest_args: Sequence[str], reports: Path) -> RunResult:
    report = reports / f"run-{number}.xml"
    log = reports / f"run-{number}.log"
    started = time.monotonic()
    # A base folder of the run's own: pytest removes all but the newest three numbered
    # folders under /tmp/pytest-of-<user>, so any other pytest started meanwhile could
    # delete this run's cluster state from under it. (With workers, each has a folder in it.)
    basetemp = reports / f"run-{number}-tmp"
    with log.open("w") as out, LoadSampler() as sampler:
        subprocess.run([str(PYTEST), "-p", "no:cacheprovider", f"--junitxml={report}",
                        f"--basetemp={basetemp}", *pytest_args], cwd=REPO, stdout=out,
                       stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    if not report.exists():
        return RunResult(number, seconds, 0, [f"pytest wrote no report; see {log}"],
                         sampler.load())
    passed, failed = outcome(report)
    return RunResult(number, seconds, passed, failed, sampler.load())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="busy loops beside the runs")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes that run each run's tests (pytest -n), as TEST_WORKERS")
    parser.add_argument("--reports", type=Path, default=Path("/tmp/repeat-tests"),
                        help="folder for each run's JUnit report and log")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers takes 1 or more")
    selection = args.pytest_args or ["-m", "timing"]
    pytest_args = [*workers_args(args.workers), *selection]
    args.reports.mkdir(parents=True, exist_ok=True)
    # Stopped with SIGTERM, the busy loops still go (the ``finally`` of busy_loops runs).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = []
    with busy_loops(args.busy):
        for number in range(1, args.runs + 1):
            result = run_once(number, pytest_args, args.reports)
            results.append(result)
            state = "passed" if result.ok else f"FAILED: {', '.join(result.failed)}"
            print(f"run {number}/{args.runs} ({args.busy} busy loops, {args.workers} "
                  f"workers): {result.passed} passed "
                  f"in {result.seconds:.0f} s (load average mean {result.load.mean:.1f}, "
                  f"peak {result.load.peak:.1f}); {state}", flush=True)
    good = sum(r.ok for r in results)
    print(f"{good} of {len(results)} runs passed; selection: {' '.join(selection)}; "
          f"{args.workers} workers")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
