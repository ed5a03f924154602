"""The image's process commands: each replaces the current process (``os.execvp``),
so the command runs as PID 1's direct successor and receives signals itself
(SIGTERM -> Celery's warm shutdown)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

BEAT_SCHEDULE_ENV = "METAMAPPER_BEAT_SCHEDULE"
DEFAULT_BEAT_SCHEDULE = "/tmp/celerybeat-schedule"


def resolve(program: str) -> str:
    """``program`` from this interpreter's bin directory if it is there, else from PATH."""
    here = str(Path(sys.executable).parent)
    found = shutil.which(program, path=os.pathsep.join([here, os.environ.get("PATH", "")]))
    return found or program


def exec_command(argv: Sequence[str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    program = resolve(argv[0])
    try:
        os.execvp(program, [argv[0], *argv[1:]])
    except FileNotFoundError:
        sys.exit(f"metamapper: command not found: {argv[0]}")


def worker_argv(args: Sequence[str]) -> list[str]:
    return ["celery", "--app", "metamapper", "worker", "-l", "info", *args]


def scheduler_argv(args: Sequence[str]) -> list[str]:
    """single-beat holds a lock in Redis and runs beat only while it has it."""
    schedule = os.environ.get(BEAT_SCHEDULE_ENV, DEFAULT_BEAT_SCHEDULE)
    return [
        "single-beat", resolve("celery"), "--app", "metamapper", "beat", "-l", "info",
        "--schedule", schedule, *args,
    ]


def operator_argv(args: Sequence[str]) -> list[str]:
    return ["metamapper-operator", *args]


def shell_argv(args: Sequence[str]) -> list[str]:
    return ["celery", "--app", "metamapper", "shell", *args]
