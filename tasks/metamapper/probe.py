"""Kubernetes probes for the worker and the scheduler, by files in ``METAMAPPER_PROBE_DIR``.

The processes stamp files (:mod:`metamapper.bootsteps`, :mod:`metamapper.beat`); the
``metamapper-probe`` command reads them. It imports nothing but the standard library, so
an exec probe costs a Python start-up and a few file reads: no broker, no Celery.

Each stamp holds the process id and the process's start time (from ``/proc``): a stamp
left in the pod's ``/tmp`` volume by an earlier container (the volume outlives a
container restart) names a process that is gone, and counts as absent.

- ``worker-live``: the worker's main process is alive, and while it consumes, its event
  loop has ticked within ``--max-age`` seconds. While it is not consuming (the broker is
  down and Celery is reconnecting) the loop does not run and nothing is asked of it, so a
  broker outage never restarts a healthy worker.
- ``worker-ready``: the worker consumes from the broker now.
- ``beat-live``: a running beat has ticked within ``--max-age`` seconds; a scheduler pod
  whose beat is not running (a single-beat standby) is live.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DIR_ENV = "METAMAPPER_PROBE_DIR"
DEFAULT_DIR = "/tmp"
WORKER_LIVE = "metamapper-worker-live"
WORKER_READY = "metamapper-worker-ready"
BEAT_LIVE = "metamapper-beat-live"


def probe_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_DIR)


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def stamp(name: str) -> None:
    """Write (or refresh) the stamp ``name`` for this process."""
    pid = os.getpid()
    path = probe_dir() / name
    tmp = path.with_name(f".{name}.{pid}")
    tmp.write_text(f"{pid} {start_time(pid)}\n")
    tmp.replace(path)


def unstamp(name: str) -> None:
    (probe_dir() / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class Stamp:
    """A stamp of a process that is still running, and its age in seconds."""

    pid: int
    age: float


def read(name: str, now: float | None = None) -> Stamp | None:
    """The stamp ``name`` if its process is still the one running, else None."""
    path = probe_dir() / name
    try:
        pid_text, started = path.read_text().split()
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    if start_time(pid) != started:
        return None
    return Stamp(pid, age)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str


def worker_live(max_age: float) -> Verdict:
    live = read(WORKER_LIVE)
    if live is None:
        return Verdict(False, "no running worker has stamped its liveness")
    if read(WORKER_READY) is None:
        return Verdict(True, f"worker {live.pid} alive, not consuming (broker unreachable?)")
    if live.age > max_age:
        return Verdict(False, f"worker {live.pid} consumes but its event loop has not ticked "
                              f"for {live.age:.0f} s")
    return Verdict(True, f"worker {live.pid} ticked {live.age:.0f} s ago")


def worker_ready() -> Verdict:
    ready = read(WORKER_READY)
    if ready is None:
        return Verdict(False, "the worker is not consuming")
    return Verdict(True, f"worker {ready.pid} consuming")


def beat_live(max_age: float) -> Verdict:
    beat = read(BEAT_LIVE)
    if beat is None:
        return Verdict(True, "no beat running here (standby)")
    if beat.age > max_age:
        return Verdict(False, f"beat {beat.pid} has not ticked for {beat.age:.0f} s")
    return Verdict(True, f"beat {beat.pid} ticked {beat.age:.0f} s ago")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metamapper-probe", description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=("worker-live", "worker-ready", "beat-live"))
    parser.add_argument("--max-age", type=float, default=60.0,
                        help="seconds since the last tick before a process counts as stuck")
    args = parser.parse_args(argv)
    verdict = {
        "worker-live": lambda: worker_live(args.max_age),
        "worker-ready": worker_ready,
        "beat-live": lambda: beat_live(args.max_age),
    }[args.check]()
    print(verdict.detail)
    sys.exit(0 if verdict.ok else 1)
