"""The pods' probes on real Celery processes: a worker whose broker (a Redis server of the
test's own) is stopped and started again, and a beat.

The worker's probes are asked both ways Kubernetes can ask them: ``metamapper-probe`` as an
exec probe (a command whose exit status is the verdict) and the worker's own HTTP port
(``/livez``, ``/readyz``: the status code is the verdict), with the same answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from metamapper import probe as stamps_of
from metamapper.probe_server import ProbeServer
from tests.helpers import OwnRedis, free_port, wait_until
from tests.tasks.conftest import BIN, Process

Env = Callable[..., dict[str, str]]
MAX_AGE = 4.0


@dataclass(frozen=True)
class Answer:
    ok: bool
    text: str


def probe(probe_dir: Path, check: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "metamapper-probe"), check, "--max-age", str(MAX_AGE)],
        env={**os.environ, "METAMAPPER_PROBE_DIR": str(probe_dir)},
        capture_output=True, text=True, timeout=30, check=False)


def passes(probe_dir: Path, check: str) -> bool:
    return probe(probe_dir, check).returncode == 0


def ask_exec(probe_dir: Path, port: int, check: str) -> Answer:
    done = probe(probe_dir, check)
    return Answer(done.returncode == 0, done.stdout)


PATHS = {"worker-live": f"/livez?max-age={MAX_AGE:g}", "worker-ready": "/readyz"}


def get(port: int, path: str) -> Answer:
    """As the kubelet's HTTP probe: 2xx passes; anything else, or no answer, fails."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return Answer(True, reply.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(False, f"{error.code}: {error.read().decode()}")
    except OSError as error:          # refused, or no answer in time
        return Answer(False, f"no answer: {error}")


def ask_http(probe_dir: Path, port: int, check: str) -> Answer:
    return get(port, PATHS[check])


Ask = Callable[[Path, int, str], Answer]


# A stopped main process: the exec probe finds its stamp old; over HTTP nobody answers.
@pytest.mark.parametrize(("ask", "stalled"), [(ask_exec, "has not ticked"),
                                              (ask_http, "no answer")], ids=["exec", "http"])
def test_worker_stays_live_while_its_broker_is_down_and_fails_when_its_loop_stalls(
        ask: Ask, stalled: str, own_redis: OwnRedis, tmp_path: Path,
        start_worker: Callable[..., Process], process_env: Env) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    port = free_port()
    worker = start_worker(process_env(
        METAMAPPER_CELERY_BROKER_URL=own_redis.url, METAMAPPER_PROBE_DIR=str(stamps),
        METAMAPPER_PROBE_PORT=str(port),
        METAMAPPER_CELERY_SETTINGS=json.dumps({"metamapper_probe_interval": 1})))
    wait_until(lambda: ask(stamps, port, "worker-ready").ok, what="ready while consuming")
    assert ask(stamps, port, "worker-live").ok

    own_redis.stop()                                     # the broker goes down
    wait_until(lambda: not ask(stamps, port, "worker-ready").ok, timeout=60,
               what="not ready once the connection is lost")
    outage_end = time.monotonic() + 4 * MAX_AGE          # well past the probe's max age
    while time.monotonic() < outage_end:
        answer = ask(stamps, port, "worker-live")
        assert answer.ok, answer.text
        assert "not consuming" in answer.text
        time.sleep(1)

    own_redis.start()                                    # the broker is back
    wait_until(lambda: ask(stamps, port, "worker-ready").ok, timeout=60,
               what="ready again after the broker came back")
    assert ask(stamps, port, "worker-live").ok

    os.kill(worker.popen.pid, signal.SIGSTOP)            # the main process hangs
    try:
        wait_until(lambda: not ask(stamps, port, "worker-live").ok, timeout=4 * MAX_AGE,
                   what="liveness failing for a stalled main process")
        assert stalled in ask(stamps, port, "worker-live").text
    finally:
        os.kill(worker.popen.pid, signal.SIGCONT)
    worker.stop()
    assert not ask(stamps, port, "worker-live").ok
    assert not ask(stamps, port, "worker-ready").ok


def test_a_stalled_event_loop_fails_the_http_liveness_with_the_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict over HTTP when the process answers but its loop has stopped stamping (the
    exec probe's "has not ticked"), a worker that does not consume, and bad requests."""
    monkeypatch.setenv("METAMAPPER_PROBE_DIR", str(tmp_path))
    server = ProbeServer(free_port(), host="127.0.0.1")
    try:
        assert get(server.port, "/readyz") == Answer(False, "503: the worker is not consuming\n")
        assert not get(server.port, "/livez").ok                   # nothing stamped yet
        stamps_of.stamp(stamps_of.WORKER_LIVE)
        stamps_of.stamp(stamps_of.WORKER_READY)
        assert get(server.port, "/readyz").ok
        assert get(server.port, "/livez?max-age=4").ok
        stale = time.time() - 30
        os.utime(tmp_path / stamps_of.WORKER_LIVE, (stale, stale))
        answer = get(server.port, "/livez?max-age=4")
        assert not answer.ok and "has not ticked for 30 s" in answer.text, answer
        assert get(server.port, "/livez").ok                       # the default 60 s
        assert get(server.port, "/livez?max-age=soon") == Answer(
            False, "503: max-age must be a number of seconds, not 'soon'\n")
        assert get(server.port, "/healthz") == Answer(
            False, "404: no such probe: /livez or /readyz\n")
    finally:
        server.close()


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
