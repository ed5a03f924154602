"""``metamapper inspect``, ``runs`` and ``revisions`` on Metamapper's metastore, run as
processes the way the image runs them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import psycopg

from metamapper.metastore import datastores, open_metastore, workspaces
from metamapper.metastore.datastores import ConnectionSettings
from tests.tasks.conftest import MetamapperDB
from tests.tasks.test_definitions import register

SECRET = "TopSecret-77e1"


def test_inspect_runs_and_revisions(
    metamapper_db: MetamapperDB, postgres_dsn: str, process_env: Callable[..., dict[str, str]]
) -> None:
    def metamapper(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "metamapper", *args], capture_output=True,
                              text=True, timeout=60, env=process_env(**metamapper_db.env))

    psycopg.connect(postgres_dsn, autocommit=True).execute("CREATE TABLE things (id INT)")
    with open_metastore() as conn:
        slug = datastores.load(conn, register(conn, postgres_dsn, "postgresql")).slug
        owner = workspaces.create_user(conn, "x@example.org")
        workspace = workspaces.create_workspace(conn, "down", "Down", owner)
        datastores.register(conn, workspace.id, "Down", ConnectionSettings(
            "postgresql", "127.0.0.1", 1, "x", "app", SECRET))

    first = metamapper("inspect", slug)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"run {first.stdout.split()[1]} SUCCESS, 1 changes")
    psycopg.connect(postgres_dsn, autocommit=True).execute(
        "ALTER TABLE things ADD COLUMN weight REAL")
    assert ": SUCCESS, 1 changes" in metamapper("inspect", slug).stdout
    header, *lines = metamapper("revisions", slug).stdout.splitlines()
    assert header.split() == ["RUN", "RECORDED", "ACTION", "KIND", "PATH", "CHANGE"]
    # RUN, date, time, ACTION, KIND, PATH
    assert [line.split()[3:6] for line in lines] == [
        ["CREATED", "schema", "public"], ["CREATED", "column", "public.things.weight"]]

    down = metamapper("inspect", "down")
    assert down.returncode == 1 and ": FAILURE, 0 changes" in down.stdout
    assert "DatastoreUnavailable" in down.stderr and "127.0.0.1" in down.stderr
    assert SECRET not in down.stdout + down.stderr
    listed = metamapper("runs")
    assert listed.stdout.count("SUCCESS") == 2 and listed.stdout.count("FAILURE") == 1
    assert SECRET not in listed.stdout
    assert metamapper("runs", "--datastore", slug).stdout.count("SUCCESS") == 2
    assert metamapper("revisions", "nothing").returncode == 1
