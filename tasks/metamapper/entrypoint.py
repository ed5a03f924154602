"""The image's process commands: each replaces the current process (``os.execvp``),
so the command runs as PID 1's direct successor and receives signals itself
(SIGTERM -> Celery's warm shutdown).

They follow the contract of upstream Metamapper's ``bin/docker-entrypoint``: ``worker``
and ``scheduler`` take Celery's own arguments after them, the log level comes from
``METAMAPPER_CELERY_LOG_LEVEL`` (``info`` by default), and ``scheduler`` is ``celery
beat``. Beyond upstream: when ``SINGLE_BEAT_REDIS_SERVER`` is set, the scheduler runs
beat under single-beat (which holds a lock in that Redis and runs beat only while it
has it).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

BEAT_SCHEDULE_ENV = "METAMAPPER_BEAT_SCHEDULE"
DEFAULT_BEAT_SCHEDULE = "/tmp/celerybeat-schedule"
LOG_LEVEL_ENV = "METAMAPPER_CELERY_LOG_LEVEL"
SINGLE_BEAT_ENV = "SINGLE_BEAT_REDIS_SERVER"


def log_level() -> str:
    return os.environ.get(LOG_LEVEL_ENV) or "info"


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
    return ["celery", "--app", "metamapper", "worker", "-l", log_level(), *args]


def scheduler_argv(args: Sequence[str]) -> list[str]:
    """``celery beat``; under single-beat when its Redis is configured.

    A ``--schedule`` among ``args`` comes after the default and so wins.
    """
    schedule = os.environ.get(BEAT_SCHEDULE_ENV, DEFAULT_BEAT_SCHEDULE)
    beat = [resolve("celery"), "--app", "metamapper", "beat", "-l", log_level(),
            "--schedule", schedule, *args]
    if os.environ.get(SINGLE_BEAT_ENV):
        return ["single-beat", *beat]
    return beat


def flower_argv(args: Sequence[str]) -> list[str]:
    """Flower on ``METAMAPPER_FLOWER_PORT`` (5555), as upstream's ``flower`` command."""
    port = os.environ.get("METAMAPPER_FLOWER_PORT") or "5555"
    return ["celery", "--app", "metamapper", "flower", f"--port={port}", *args]


def operator_argv(args: Sequence[str]) -> list[str]:
    return ["metamapper-operator", *args]


def shell_argv(args: Sequence[str]) -> list[str]:
    return ["celery", "--app", "metamapper", "shell", *args]
