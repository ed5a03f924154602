"""The ``metamapper`` command, run as a process the way the image runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from metamapper.entrypoint import flower_argv, operator_argv, scheduler_argv, worker_argv
from metamapper.metastore import datastores
from metamapper.metastore.fernet import Cipher
from tests.tasks.conftest import MetamapperDB, metastore_env

BIN = Path(sys.executable).parent


@pytest.fixture
def metamapper(
    process_env: Callable[..., dict[str, str]],
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m metamapper ARGS`` with the environment given as keywords."""

    def run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "metamapper", *args], input=stdin, capture_output=True,
            text=True, timeout=60, env=process_env(**env),
        )

    return run


Metamapper = Callable[..., subprocess.CompletedProcess[str]]


def test_console_script_is_installed() -> None:
    result = subprocess.run([BIN / "metamapper", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "metastore" in result.stdout


def test_without_the_database_drivers_help_runs_and_metastore_commands_say_why() -> None:
    """The operator image has the command but not psycopg: ``--help`` and the process
    commands must work there, and the metastore commands must say what is missing."""
    blocked = "import sys; sys.modules['psycopg'] = None; from metamapper.cli import main; "

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", f"{blocked}main({list(args)!r})"],
                              capture_output=True, text=True, timeout=60)

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    assert "worker" in helped.stdout and "operator" in helped.stdout
    assert "psycopg is not installed here" in helped.stdout
    refused = run("runs")
    assert refused.returncode == 1
    assert "runs needs the worker image: the Python module psycopg" in refused.stderr


def test_health_fails_without_broker(
    metamapper: Metamapper, metamapper_db: MetamapperDB,
) -> None:
    result = metamapper(
        "health", "--check", "broker", "--check", "metastore", "--json", "--timeout", "1",
        METAMAPPER_BROKER_URL="redis://:TopSecret@127.0.0.1:1/0",
        **{**metamapper_db.env, "METAMAPPER_DB_PORT": "1"},
    )
    assert result.returncode == 1
    assert "TopSecret" not in result.stdout
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["broker"]["ok"] is False
    assert checks["metastore"]["ok"] is False  # nothing listens there
    assert metamapper("health", "--check", "metastore", **metamapper_db.env).returncode == 0


def test_unknown_commands_pass_through(metamapper: Metamapper) -> None:
    assert metamapper("echo", "passed", "through").stdout == "passed through\n"
    missing = metamapper("no-such-program")
    assert missing.returncode == 1 and "command not found: no-such-program" in missing.stderr


def test_worker_execs_celery_worker(metamapper: Metamapper) -> None:
    result = metamapper("worker", "--help")
    assert result.returncode == 0
    assert "--concurrency" in result.stdout


def test_shell_has_the_app(metamapper: Metamapper) -> None:
    result = metamapper("shell", "--python", stdin="print('app is', app.main)\n")
    assert "app is metamapper" in result.stdout + result.stderr


def test_process_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METAMAPPER_CELERY_LOG_LEVEL", raising=False)
    monkeypatch.delenv("SINGLE_BEAT_REDIS_SERVER", raising=False)
    assert worker_argv(["-Q", "revisioner", "-c", "4"]) == [
        "celery", "--app", "metamapper", "worker", "-l", "info", "-Q", "revisioner", "-c", "4",
    ]
    # Upstream's contract: `scheduler` is celery beat, the log level from the environment.
    monkeypatch.setenv("METAMAPPER_CELERY_LOG_LEVEL", "debug")
    argv = scheduler_argv(["--max-interval", "5"])
    assert argv[0].endswith("celery")
    assert argv[1:] == ["--app", "metamapper", "beat", "-l", "debug",
                        "--schedule", "/tmp/celerybeat-schedule", "--max-interval", "5"]
    # With single-beat's Redis configured, beat runs under single-beat.
    monkeypatch.setenv("SINGLE_BEAT_REDIS_SERVER", "redis://127.0.0.1:6379/0")
    assert scheduler_argv([])[0] == "single-beat"
    assert scheduler_argv([])[1] == argv[0]
    # Upstream's `flower`: the port from METAMAPPER_FLOWER_PORT, 5555 by default.
    monkeypatch.delenv("METAMAPPER_FLOWER_PORT", raising=False)
    assert flower_argv(["--basic-auth=x:y"]) == [
        "celery", "--app", "metamapper", "flower", "--port=5555", "--basic-auth=x:y"]
    assert operator_argv(["--verbose"]) == ["metamapper-operator", "--verbose"]


def test_metastore_init_and_registration(postgres_dsn: str, metamapper: Metamapper) -> None:
    """A metastore without the web app: the schema, a workspace, a datastore."""
    env = metastore_env(postgres_dsn)

    def metastore(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return metamapper("metastore", *args, **{**env, **extra})

    created = metastore("init")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created Metamapper's schema (")
    again = metastore("init")
    assert again.returncode == 1 and "already has Metamapper's tables" in again.stderr

    assert metastore("add-workspace", "acme", "--owner", "ada@example.com").returncode == 0
    url = "postgresql://app:TopSecret@db.internal:5432/shop"
    added = metastore("add-datastore", "Shop", "--workspace", "acme", "--url-env", "SHOP_URL",
                      "--contact", "oncall@example.com", SHOP_URL=url)
    assert added.returncode == 0, added.stderr
    listed = metastore("datastores")
    assert "TopSecret" not in added.stdout + added.stderr + listed.stdout
    _header, row = listed.stdout.splitlines()
    assert row.split()[1:] == ["acme", "Shop", "postgresql", "db.internal:5432/shop", "yes"]

    with psycopg.connect(postgres_dsn) as conn:
        shop = datastores.load(conn, row.split()[0], Cipher([env["METAMAPPER_FERNET_KEY"]]))
    assert shop.connection.url() == url
    assert shop.incident_contacts == ("oncall@example.com",)

    twice = metastore("add-datastore", "Shop", "--workspace", "acme", "--url-env", "SHOP_URL",
                      SHOP_URL=url)
    assert twice.returncode == 1 and "already has a datastore named 'Shop'" in twice.stderr
    again = metastore("add-workspace", "acme", "--owner", "bob@example.com")
    assert again.returncode == 1 and "workspace 'acme' exists" in again.stderr
    missing = metastore("add-datastore", "x", "--workspace", "nope", "--url-env", "SHOP_URL",
                        SHOP_URL=url)
    assert missing.returncode == 1 and "no workspace 'nope'" in missing.stderr
    down = metastore("datastores", METAMAPPER_DB_PORT="1", METAMAPPER_DB_PASSWORD="TopSecret")
    assert down.returncode == 1 and "TopSecret" not in down.stderr
    assert "metastore postgres@127.0.0.1:1/" in down.stderr
