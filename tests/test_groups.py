"""The groups of tests that run in one process when the suite runs in several
(``GROUPS`` in tests/conftest.py; ``make test TEST_WORKERS=2``): every test that uses the
node is in the node group, for one node stack at most may exist on the machine.

The suite is collected (never run) in a process of its own, which reports each test's
fixtures. tests/operator/test_rbac.py is left out: its cases are named at collection from
the chart as helm renders it, and this check needs no tool built (it runs in
``make test-fast``); that module is a group of its own, on control planes only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import GROUPS, NODE_FIXTURES, REPO
from tests.scheduling import group_of

RBAC_MATRIX = "tests/operator/test_rbac.py"


@dataclass(frozen=True)
class Collected:
    """A test of the suite and the fixtures it uses."""

    nodeid: str
    fixtures: frozenset[str]


def collect(report: Path) -> list[Collected]:
    """Every test of the suite but the RBAC matrix, with its fixtures."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-p", "tests.fixture_report", f"--fixture-report={report}",
         f"--ignore={RBAC_MATRIX}", "tests"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [Collected(entry["nodeid"], frozenset(entry["fixtures"]))
            for entry in map(json.loads, report.read_text().splitlines())]


def outside_the_node_group(tests: Iterable[Collected]) -> list[str]:
    """The tests that use a fixture of the node but are not in the node group."""
    return [test.nodeid for test in tests
            if test.fixtures & NODE_FIXTURES and group_of(test.nodeid, GROUPS) != "node"]


def test_every_test_that_uses_the_node_is_in_the_node_group(tmp_path: Path) -> None:
    tests = collect(tmp_path / "fixtures.jsonl")
    assert outside_the_node_group(tests) == []
    # What the check looks at: the end-to-end tests use the node through `stack`, the
    # image tests through `built`.
    using = {test.nodeid.split("::")[0] for test in tests if test.fixtures & NODE_FIXTURES}
    assert "tests/e2e/test_autoscaling.py" in using and "tests/devenv/test_images.py" in using


def test_a_test_that_uses_the_node_elsewhere_is_found() -> None:
    assert outside_the_node_group([
        Collected("tests/operator/test_ha.py::test_x", frozenset({"stack", "tmp_path"})),
        Collected("tests/operator/test_ha.py::test_y", frozenset({"cluster", "tmp_path"})),
        Collected("tests/e2e/test_pods.py::test_z", frozenset({"fleets", "stack"})),
    ]) == ["tests/operator/test_ha.py::test_x"]


def test_each_path_of_a_group_is_there_and_in_one_group_only() -> None:
    paths = [path for group in GROUPS.values() for path in group]
    assert all((REPO / path).exists() for path in paths), paths
    assert all(not other.startswith(path) for path in paths for other in paths
               if other != path), paths
    assert RBAC_MATRIX in GROUPS["rbac-matrix"]
