"""The pods' probes on real Celery processes: ``metamapper-probe`` against a worker whose
broker (a Redis server of the test's own) is stopped and started again, and a beat.

The probe runs as Kubernetes runs it: a command whose exit status is the verdict.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import OwnRedis, wait_until
from tests.tasks.conftest import BIN, Process

Env = Callable[..., dict[str, str]]
MAX_AGE = 4.0


def probe(probe_dir: Path, check: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "metamapper-probe"), check, "--max-age", str(MAX_AGE)],
        env={**os.environ, "METAMAPPER_PROBE_DIR": str(probe_dir)},
        capture_output=True, text=True, timeout=30, check=False)


def passes(probe_dir: Path, check: str) -> bool:
    return probe(probe_dir, check).returncode == 0


def test_worker_stays_live_while_its_broker_is_down_and_fails_when_its_loop_stalls(
        own_redis: OwnRedis, tmp_path: Path, start_worker: Callable[..., Process],
        process_env: Env) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    worker = start_worker(process_env(
        METAMAPPER_CELERY_BROKER_URL=own_redis.url, METAMAPPER_PROBE_DIR=str(stamps),
        METAMAPPER_CELERY_SETTINGS=json.dumps({"metamapper_probe_interval": 1})))
    wait_until(lambda: passes(stamps, "worker-ready"), what="ready while consuming")
    assert passes(stamps, "worker-live")

    own_redis.stop()                                     # the broker goes down
    wait_until(lambda: not passes(stamps, "worker-ready"), timeout=60,
               what="not ready once the connection is lost")
    outage_end = time.monotonic() + 4 * MAX_AGE          # well past the probe's max age
    while time.monotonic() < outage_end:
        result = probe(stamps, "worker-live")
        assert result.returncode == 0, result.stdout
        assert "not consuming" in result.stdout
        time.sleep(1)

    own_redis.start()                                    # the broker is back
    wait_until(lambda: passes(stamps, "worker-ready"), timeout=60,
               what="ready again after the broker came back")
    assert passes(stamps, "worker-live")

    os.kill(worker.popen.pid, signal.SIGSTOP)            # the main process hangs
    try:
        wait_until(lambda: not passes(stamps, "worker-live"), timeout=4 * MAX_AGE,
                   what="liveness failing for a stalled event loop")
        assert "has not ticked" in probe(stamps, "worker-live").stdout
    finally:
        os.kill(worker.popen.pid, signal.SIGCONT)
    worker.stop()
    assert not passes(stamps, "worker-live")
    assert not passes(stamps, "worker-ready")


def test_beat_liveness_follows_its_ticks(
        redis_url: str, tmp_path: Path, processes: Callable[..., Process],
        process_env: Env) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    assert passes(stamps, "beat-live")                   # no beat here: a standby is live
    beat = processes(
        [str(BIN / "celery"), "--app", "metamapper", "beat", "-l", "info",
         "--schedule", str(tmp_path / "schedule"), "--max-interval", "1"],
        process_env(METAMAPPER_CELERY_BROKER_URL=redis_url, METAMAPPER_PROBE_DIR=str(stamps)),
        "beat")
    wait_until(lambda: (stamps / "metamapper-beat-live").exists(), timeout=60,
               what="beat's first tick")
    assert passes(stamps, "beat-live")
    os.kill(beat.popen.pid, signal.SIGSTOP)              # beat hangs: its ticks stop
    try:
        wait_until(lambda: not passes(stamps, "beat-live"), timeout=4 * MAX_AGE,
                   what="liveness failing for a beat that stopped ticking")
    finally:
        os.kill(beat.popen.pid, signal.SIGCONT)
    beat.stop(signal.SIGKILL)                            # its stamp stays, its process is gone
    assert (stamps / "metamapper-beat-live").exists()
    assert passes(stamps, "beat-live")
