"""A workload for the demo and the end-to-end tests: tasks that record what happened.

Workers load it through ``celery.settings.imports``. Each task appends a line to
``<record dir>/started/<task id>`` when it starts and to ``.../done/<task id>`` when it
finishes, so a run can be audited afterwards: a task is lost when it never finished,
ran twice when ``done`` has two lines, and was interrupted (and delivered again) when it
started more often than it finished. Each line says when, on which pod (``HOSTNAME``,
the pod's name in Kubernetes and on the local node) and in which process.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from metamapper.celery import app

TASK = "devenv.workload.work"


def _record(folder: Path, task_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pod = os.environ.get("HOSTNAME") or socket.gethostname()
    line = f"{time.time():.3f} {pod} {os.getpid()}\n"
    with (folder / task_id).open("a") as out:
        out.write(line)


@app.task(name=TASK)
def work(task_id: str, seconds: float, record_dir: str) -> None:
    """Stand-in for a unit of real work that takes ``seconds``."""
    _record(Path(record_dir) / "started", task_id)
    time.sleep(seconds)
    _record(Path(record_dir) / "done", task_id)


@dataclass(frozen=True)
class Tally:
    sent: int
    done: int
    lost: int
    duplicated: int
    interrupted: int


@dataclass(frozen=True)
class Record:
    """One line of a task's record: when, on which pod, in which process."""

    at: float
    pod: str
    pid: int


def records(record_dir: Path, stage: str, task_id: str) -> list[Record]:
    """The ``started`` or ``done`` records of one task, oldest first."""
    path = record_dir / stage / task_id
    if not path.exists():
        return []
    return [Record(float(at), pod, int(pid))
            for at, pod, pid in (line.split() for line in path.read_text().splitlines())]


def _lines(folder: Path) -> dict[str, int]:
    if not folder.exists():
        return {}
    return {f.name: len(f.read_text().splitlines()) for f in folder.iterdir()}


def tally(record_dir: Path, task_ids: list[str]) -> Tally:
    started, done = _lines(record_dir / "started"), _lines(record_dir / "done")
    return Tally(
        sent=len(task_ids),
        done=sum(1 for t in task_ids if done.get(t)),
        lost=sum(1 for t in task_ids if not done.get(t)),
        duplicated=sum(1 for t in task_ids if done.get(t, 0) > 1),
        interrupted=sum(1 for t in task_ids if started.get(t, 0) > done.get(t, 0)),
    )
