"""A workload for the demo and the end-to-end tests: tasks that record what happened.

Workers load it through ``celery.settings.imports``. Each task appends a line to
``<record dir>/started/<task id>`` when it starts and to ``.../done/<task id>`` when it
finishes, so a run can be audited afterwards: a task is lost when it never finished,
ran twice when ``done`` has two lines, and was interrupted (and delivered again) when it
started more often than it finished.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from metamapper.celery import app

TASK = "metamapper_operator.devenv.workload.work"


def _record(folder: Path, task_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    line = f"{time.time():.3f} {socket.gethostname()} {os.getpid()}\n"
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
