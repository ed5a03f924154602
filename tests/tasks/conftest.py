"""Fixtures for the worker image's tests: Metamapper's metastore, and real Celery processes.

Broker and database services come from the suite's top-level fixtures
(``redis_url``, ``rabbitmq``, ``postgres_dsn``, ``mariadb_dsn``, ``sqs_endpoint``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg.conninfo import make_conninfo

from devenv.waiting import wait_until
from metamapper.metastore import MetastoreSettings, open_metastore, schema

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class MetamapperDB:
    """A fresh database holding Metamapper 1.0's schema (``schema.sql``)."""

    dsn: str
    #: METAMAPPER_DB_* and METAMAPPER_FERNET_KEY, for a child process's environment.
    env: dict[str, str]
    fernet_key: str


def metastore_env(dsn: str) -> dict[str, str]:
    """METAMAPPER_DB_* naming the database of ``dsn``, and a new METAMAPPER_FERNET_KEY."""
    return {
        **MetastoreSettings.from_dsn(dsn).environment(),
        "METAMAPPER_FERNET_KEY": Fernet.generate_key().decode(),
    }


@pytest.fixture
def metamapper_db(postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[MetamapperDB]:
    """A database of its own on the suite's PostgreSQL (beside ``postgres_dsn``'s, which
    stays free for a datastore), with Metamapper's tables, named by METAMAPPER_DB_* and
    METAMAPPER_FERNET_KEY (a new key) in this process's environment."""
    name = f"metamapper_{uuid.uuid4().hex[:12]}"
    admin = make_conninfo(postgres_dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    dsn = make_conninfo(postgres_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.create(conn)
    env = metastore_env(dsn)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield MetamapperDB(dsn=dsn, env=env, fernet_key=env["METAMAPPER_FERNET_KEY"])
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


@pytest.fixture
def metastore(metamapper_db: MetamapperDB) -> Iterator[psycopg.Connection]:
    """A connection to ``metamapper_db``, as the worker opens it."""
    with open_metastore() as conn:
        yield conn


def _process_env(**overrides: str) -> dict[str, str]:
    """The environment for a Celery process: ours, the venv first on PATH, overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METAMAPPER_")}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@dataclass
class Process:
    """A subprocess in its own session (so the whole tree can be signalled) with a log file."""

    argv: list[str]
    env: Mapping[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            self.argv, env=dict(self.env), stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0) -> None:
        def found() -> bool:
            if self.popen.poll() is not None:
                pytest.fail(f"{self.argv[0]} exited ({self.popen.returncode}):\n{self.log}")
            return text in self.log

        wait_until(found, timeout, what=f"{text!r} in the log")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process (its whole group for SIGKILL) and wait for it."""
        if self.popen.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log_file.close()
        return self.popen.returncode


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start processes that are all stopped at the end of the test."""
    started: list[Process] = []

    def start(argv: list[str], env: Mapping[str, str], name: str) -> Process:
        process = Process(argv, env, tmp_path / f"{name}.log")
        started.append(process)
        return process

    yield start
    for process in reversed(started):
        process.stop()
        # Children left behind by a killed parent (beat under single-beat) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)


@pytest.fixture
def start_worker(processes: Callable[..., Process]) -> Callable[..., Process]:
    """Start ``celery --app metamapper worker`` the way worker pods do; wait until ready."""

    def start(env: Mapping[str, str], queues: str = "default,checks,revisioner,usage",
              name: str = "worker", concurrency: int = 2) -> Process:
        argv = [
            str(BIN / "celery"), "--app", "metamapper", "worker", "-Q", queues,
            "-c", str(concurrency), "--hostname", f"{name}@test", "-l", "info",
        ]
        worker = processes(argv, env, name)
        worker.wait_for_log(f"{name}@test ready.", timeout=60)
        return worker

    return start


@pytest.fixture
def process_env() -> Callable[..., dict[str, str]]:
    """``process_env(**overrides)``: the environment for a Celery subprocess."""
    return _process_env


@pytest.fixture
def config_module(tmp_path: Path) -> Callable[..., dict[str, str]]:
    """``config_module(name, **settings)``: a user configuration module of plain
    assignments, like the examples in Metamapper's docs; returns the environment
    variables that select it."""

    def write(name: str, **settings: Any) -> dict[str, str]:
        directory = tmp_path / "config"
        directory.mkdir(exist_ok=True)
        body = "".join(f"{key} = {value!r}\n" for key, value in settings.items())
        (directory / f"{name}.py").write_text(body)
        return {"METAMAPPER_CELERY_CONFIG_MODULE": name, "PYTHONPATH": str(directory)}

    return write
