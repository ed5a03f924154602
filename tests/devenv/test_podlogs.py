"""Task errors found in pods' logs (devenv.podlogs), on real Celery logs.

The logs in ``logs/`` are real: a worker of this image from its banner to ``ready.``; the
same worker then running a heartbeat whose metastore refuses connections, the workload's
task that fails on purpose (after one retry) and an upstream task this image refuses;
and a beat whose start logged an error of celery-redbeat's (since fixed).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from devenv.podlogs import PodLogs, errors_in
from devenv.workload import FLAKY

LOGS = Path(__file__).parent / "logs"


def log(name: str) -> str:
    return (LOGS / name).read_text()


def test_a_worker_that_started_has_no_error() -> None:
    assert errors_in(log("worker-ready.log")) == []


def test_each_failure_is_one_error_named_by_its_first_line() -> None:
    found = errors_in(log("worker-failures.log"))
    assert len(found) == 3
    heartbeat, refused, flaky = found
    assert "ERROR/MainProcess] Task app.healthchecks.tasks.heartbeat[" in heartbeat
    assert "raised unexpected: MetastoreUnavailable(" in heartbeat
    assert "app.omnisearch.tasks.update_single_es_object cannot run here" in refused
    assert f"Task {FLAKY}[" in flaky and "raised unexpected: ValueError(" in flaky


def test_a_task_that_fails_on_purpose_is_left_out_and_only_it() -> None:
    found = errors_in(log("worker-failures.log"), expected=[FLAKY])
    assert len(found) == 2
    assert not any(FLAKY in line for line in found)
    # Its retry, logged at INFO, never counted.
    assert "retry: Retry in 0s" in log("worker-failures.log")


def test_an_error_at_start_with_its_traceback_is_one_error() -> None:
    (found,) = errors_in(log("beat-start-error.log"))
    assert "ERROR/MainProcess] Signal handler" in found


def test_a_traceback_outside_celerys_logging_is_an_error() -> None:
    text = (log("worker-ready.log") + "Traceback (most recent call last):\n"
            '  File "/usr/local/bin/single-beat", line 8, in <module>\n'
            "ConnectionError: Error 111 connecting to redis:6379. Connection refused.\n")
    assert errors_in(text) == ["Traceback (most recent call last):"]


class FakeKubectl:
    """``kubectl get pods -o json`` and ``kubectl logs``, from dicts; records the calls."""

    def __init__(self, pods: list[dict[str, Any]], logs: dict[tuple[str, ...], str]) -> None:
        self.pods, self.logs = pods, logs
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[:2] == ("get", "pods"):
            return subprocess.CompletedProcess(args, 0, json.dumps({"items": self.pods}), "")
        key = tuple(a for a in args if a not in ("logs", "-n", "demo", "-c"))
        if key in self.logs:
            return subprocess.CompletedProcess(args, 0, self.logs[key], "")
        return subprocess.CompletedProcess(args, 1, "", "not found")


def pod(name: str, containers: dict[str, int], deleting: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **({"deletionTimestamp": "2026-12-07T00:00:00Z"}
                                      if deleting else {})},
        "spec": {"containers": [{"name": c} for c in containers]},
        "status": {"containerStatuses": [{"name": c, "restartCount": n}
                                         for c, n in containers.items()]},
    }


def test_logs_are_kept_after_their_pod_is_gone_and_a_restarted_containers_are_read_too(
) -> None:
    failing, ready = log("worker-failures.log"), log("worker-ready.log")
    kubectl = FakeKubectl(
        [pod("worker-a", {"worker": 0}, deleting=True), pod("beat-b", {"scheduler": 1})],
        {("worker-a", "worker"): failing, ("beat-b", "scheduler"): ready,
         ("beat-b", "scheduler", "--previous"): log("beat-start-error.log")})
    logs = PodLogs(kubectl, "demo")
    logs.read(terminating_only=True)
    assert set(logs.logs) == {("worker-a", "worker")}
    kubectl.pods = [pod("beat-b", {"scheduler": 1})]   # worker-a is gone
    logs.read()
    errors = logs.errors(expected=[FLAKY])
    assert [(e.pod, e.container) for e in errors] == [
        ("beat-b", "scheduler (previous)"), ("worker-a", "worker"), ("worker-a", "worker")]
    assert str(errors[0]).startswith("beat-b/scheduler (previous): [2026-12-07 ")
