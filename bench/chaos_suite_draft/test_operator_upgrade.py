"""Draft, not collected yet (the suite collects ``tests/`` only): an operator upgrade is a
fault too.

The fleets of ``bench/chaos.py`` run under the operator of an earlier revision (its chart
and its image, built from that revision); with the stream of tasks going, ``helm upgrade``
moves the release to this checkout's chart and image. Then: no worker pod was restarted
or replaced because of the upgrade (every ReplicaSet of the worker Deployments is the one
the earlier operator made, so no pod template changed, and no pod that lived through the
upgrade restarted a container), the Metamappers the earlier operator reconciled are
unchanged (their generation), and no task was lost.

The earlier revision comes from ``METAMAPPER_PREVIOUS_REV`` (a tag or commit of this
repository); its chart is taken with ``git archive`` and its images are built in a
worktree of it (content-hashed names: both versions' images live side by side in the
node's store). Its place once validated on the node: ``tests/node/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from _chaos_injectors import fleet_name, helm  # noqa: E402
from chaos import NAMESPACE, OperatorRelease, Soak  # noqa: E402

SEED = 3
STREAM_SECONDS = 60.0


@pytest.fixture
def previous(tmp_path: Path) -> Iterator[OperatorRelease]:
    """The earlier revision's chart and operator image."""
    rev = os.environ["METAMAPPER_PREVIOUS_REV"]
    chart = tmp_path / "previous-chart"
    chart.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "charts"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(chart)], input=archive, check=True)
    tree = tmp_path / "previous-tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    try:
        image = subprocess.run(
            [sys.executable, "-c", "from devenv import images; print(images.build_all().operator)"],
            cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
            text=True, check=True).stdout.split()[-1]
        yield OperatorRelease(chart / "charts" / "metamapper-operator", image)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       check=False)


def workers(run: Soak) -> dict[str, Any]:
    """The worker pods (uid, restarts), the ReplicaSets and the Metamappers' generations."""
    def items(*args: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(run.stack.kubectl(
            "get", *args, "-n", NAMESPACE, "-o", "json").stdout)["items"]
        return found

    return {
        "pods": {p["metadata"]["name"]: (p["metadata"]["uid"], sum(
            c.get("restartCount", 0) for c in p["status"].get("containerStatuses", [])))
            for p in items("pods", "-l", "app.kubernetes.io/component=worker")},
        "replicasets": sorted(r["metadata"]["name"] for r in items("replicasets")),
        "generations": {m["metadata"]["name"]: m["metadata"]["generation"]
                        for m in items("metamappers")},
    }


def test_an_operator_upgrade_restarts_no_worker_and_loses_no_task(
        tmp_path: Path, previous: OperatorRelease) -> None:
    run = Soak(tmp_path, SEED, ("redis", "rabbitmq"), (), "aof", rate=0.5,
               operator=previous)
    try:
        run.start()
        assert run.producer is not None and run.stack.images is not None
        run.producer.start()
        time.sleep(STREAM_SECONDS)
        before = workers(run)
        current = OperatorRelease(REPO / "charts" / "metamapper-operator",
                                  run.stack.images.operator)
        helm(run.stack, "upgrade", "--reuse-values", *current.helm_args())
        time.sleep(STREAM_SECONDS)   # the new operator reconciles, the stream goes on
        after = workers(run)
        outcome = run.finish()
    finally:
        run.stop()
    assert after["replicasets"] == before["replicasets"]
    assert after["generations"] == before["generations"]
    assert sorted(fleet_name(b) for b in ("redis", "rabbitmq")) == sorted(after["generations"])
    lived = set(before["pods"]) & set(after["pods"])
    assert {p: after["pods"][p] for p in lived} == {p: before["pods"][p] for p in lived}
    assert outcome.verdict.lost == ()
    assert outcome.verdict.unexplained == ()
