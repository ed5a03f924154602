"""Worker metrics from a real ``celery worker`` (prefork, two children) on Redis, scraped
from its port and parsed with prometheus_client's text parser (devenv.scrape)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from devenv.controlplane import free_port
from devenv.scrape import Sample, parse, scrape, total
from metamapper import metrics
from tests.conftest import REPO
from tests.helpers import wait_until
from tests.tasks.conftest import MetamapperDB

Env = Callable[..., dict[str, str]]

SEND = """
import sys
from metamapper.upstream.healthchecks import heartbeat
from tests.tasks.metrictasks import fail, ok, retry_once
for _ in range(8):
    ok.delay(sys.argv[1])
for _ in range(2):
    fail.delay()
retry_once.delay()
heartbeat.delay()
"""


def test_prefork_worker_serves_the_sum_of_its_children(
    redis_url: str, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
    process_env: Env, tmp_path: Path,
) -> None:
    port = free_port()
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"left by an earlier container")
    record = tmp_path / "ran"
    record.mkdir()
    env = process_env(
        METAMAPPER_BROKER_URL=redis_url, **metamapper_db.env,
        METAMAPPER_CELERY_SETTINGS=json.dumps({"imports": ["tests.tasks.metrictasks"]}),
        METAMAPPER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        PYTHONPATH=str(REPO),
    )
    start_worker(env, queues="default", name="metrics", concurrency=2)
    sent_at = time.time()
    # The sender is another pod: its values do not go into the worker's folder.
    sender = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    subprocess.run([sys.executable, "-c", SEND, str(record)], env=sender, check=True,
                   timeout=60, capture_output=True)

    def done() -> list[Sample] | None:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        finished = (total(samples, "celery_task_succeeded_total")
                    + total(samples, "celery_task_failed_total"))
        return samples if finished >= 8 + 2 + 1 + 1 else None

    samples = wait_until(done, 60, what="every task finished")
    assert len(list(record.iterdir())) >= 2, "both children of the pool ran tasks"
    host = {"hostname": "metrics@test", "queue_name": "default"}
    ok, fail, retry = "tests.metrics.ok", "tests.metrics.fail", "tests.metrics.retry_once"
    assert total(samples, "celery_task_received_total", name=ok, **host) == 8
    assert total(samples, "celery_task_started_total", name=ok, **host) == 8
    assert total(samples, "celery_task_succeeded_total", name=ok, **host) == 8
    assert total(samples, "celery_task_failed_total", name=fail, exception="ValueError",
                 **host) == 2
    assert total(samples, "celery_task_succeeded_total", name=fail) == 0
    assert total(samples, "celery_task_retried_total", name=retry, **host) == 1
    assert total(samples, "celery_task_received_total", name=retry) == 2  # and its retry
    assert total(samples, "celery_task_succeeded_total", name=retry) == 1
    assert total(samples, "celery_task_sent_total", name=retry) == 1  # sent by the child
    assert total(samples, "celery_task_runtime_count", name=ok) == 8
    runtime_sum = total(samples, "celery_task_runtime_sum", name=ok)
    assert 8 * 0.3 <= runtime_sum < 8 * 5
    assert total(samples, "celery_task_runtime_bucket", name=ok, le="0.25") == 0
    assert total(samples, "celery_task_runtime_bucket", name=ok, le="+Inf") == 8
    waited = total(samples, "metamapper_task_queue_wait_seconds_count", name=ok)
    assert waited == 8
    assert 0 <= total(samples, "metamapper_task_queue_wait_seconds_sum", name=ok) < 8 * 30
    assert total(samples, "celery_worker_up", hostname="metrics@test") == 1
    assert total(samples, "metamapper_metrics_unreadable_files") == 0
    tick = total(samples, "metamapper_beat_last_tick_timestamp_seconds")
    assert sent_at - 1 <= tick <= time.time()


def test_a_file_left_empty_by_a_killed_child_costs_no_scrape(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefork child killed between creating its values file and sizing it (an OOM kill,
    a hard time limit) leaves the file empty for good; the port still serves every other
    process's values, and says how many files it could not read."""
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    child = MmapedDict(str(tmp_path / "counter_101.db"))
    key = mmap_key("celery_task_succeeded_total", "celery_task_succeeded_total",
                   list(metrics.TASK), ["tests.metrics.ok", "metrics@test", "default"],
                   "Tasks that succeeded")
    child.write_value(key, 3.0, 0.0)
    child.close()
    (tmp_path / "counter_102.db").write_bytes(b"")

    samples = parse(generate_latest(metrics.registry()).decode())
    assert total(samples, "celery_task_succeeded_total", name="tests.metrics.ok") == 3
    assert total(samples, "metamapper_metrics_unreadable_files") == 1
