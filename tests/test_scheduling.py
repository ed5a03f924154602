"""The suite in several processes (tests/scheduling.py): a group's tests run on one worker,
in the order collected, while the other worker runs the rest, and each worker takes ports
from a share of its own; shown by ``pytest -n 2`` over a small suite of its own, whose tests
record where they ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import GROUPS, REPO
from tests.scheduling import group_of


@pytest.mark.parametrize(("nodeid", "group"), [
    ("tests/e2e/test_pods.py::test_x", "node"),
    ("tests/node/test_cluster_lifecycle.py::test_x", "node"),
    ("tests/devenv/test_images.py::test_x[worker]", "node"),
    ("tests/operator/test_rbac.py::test_x[pods.core-list]", "rbac-matrix"),
    ("tests/operator/test_ha.py::test_x", None),
    ("tests/devenv/test_free_port.py::test_x", None),
    ("tests/e2e_elsewhere/test_x.py::test_x", None),
])
def test_a_test_is_in_the_group_that_names_its_folder_or_file(nodeid: str,
                                                               group: str | None) -> None:
    assert group_of(nodeid, GROUPS) == group


CONFTEST = """
import os
import pytest
from tests.conftest import pytest_configure   # the suite's set-up of a worker
from tests.scheduling import GroupScheduling

GROUPS = {"together": ("grouped/", "test_last.py")}

def pytest_xdist_make_scheduler(config, log):
    return GroupScheduling(config, log, GROUPS)

@pytest.fixture(autouse=True)
def _record(request):
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"{request.node.nodeid} {os.environ['PYTEST_XDIST_WORKER']} "
                  f"{os.environ['METAMAPPER_PORT_SHARE']}\\n")
"""
GROUPED = """
import time
import pytest

@pytest.mark.parametrize("n", range(3))
def test_grouped(n):
    time.sleep(0.3)   # the other worker meanwhile takes the tests outside the group
"""
SPREAD = """
import pytest

@pytest.mark.parametrize("n", range(6))
def test_spread(n):
    pass
"""
LAST = """
def test_last():
    pass
"""


def test_a_group_runs_whole_on_one_worker_in_order_and_the_rest_beside_it(
        tmp_path: Path) -> None:
    suite, record = tmp_path / "suite", tmp_path / "record"
    (suite / "grouped").mkdir(parents=True)
    (suite / "pytest.ini").write_text("[pytest]\n")
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "grouped" / "test_grouped.py").write_text(GROUPED)
    (suite / "test_spread.py").write_text(SPREAD)
    (suite / "test_last.py").write_text(LAST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider",
                           "-q"], cwd=suite, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RECORD": str(record)},
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [line.split() for line in record.read_text().splitlines()]
    grouped = [(test, worker) for test, worker, _ in ran if not test.startswith("test_spread")]
    assert [test for test, _ in grouped] == [
        "grouped/test_grouped.py::test_grouped[0]", "grouped/test_grouped.py::test_grouped[1]",
        "grouped/test_grouped.py::test_grouped[2]", "test_last.py::test_last"]
    assert len({worker for _, worker in grouped}) == 1
    spread = {worker for test, worker, _ in ran if test.startswith("test_spread")}
    assert len(ran) == 10 and spread - {grouped[0][1]}
    assert {(worker, share) for _, worker, share in ran} == {("gw0", "0/2"), ("gw1", "1/2")}
