"""The metastore the demo and the walkthrough's end-to-end test give their fleets
(devenv.metastore), on the real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from devenv import metastore, services
from devenv.demo import demo_patch


def test_the_secret_is_the_one_the_example_names_and_holds_what_pods_need() -> None:
    assert metastore.secret_name() == "metamapper-metastore"
    made = metastore.Metastore(
        metastore.MetastoreSettings.from_dsn(f"{metastore.POSTGRES}/mm"), "a-key")
    secret = json.loads(made.secret())
    assert secret["metadata"]["name"] == "metamapper-metastore"
    assert secret["stringData"]["METAMAPPER_DB_HOST"] == services.HOST   # pods reach it
    assert secret["stringData"]["METAMAPPER_DB_NAME"] == "mm"
    assert secret["stringData"]["METAMAPPER_FERNET_KEY"] == "a-key"
    assert "a-key" not in repr(made)
    # The demo patches no envFrom of its own: the example's reaches the pods.
    assert "envFrom" not in demo_patch("worker:1")["spec"]


@pytest.mark.usefixtures("postgres_dsn")   # the suite's PostgreSQL, running
def test_a_new_metastore_has_metamappers_tables_and_takes_the_cli() -> None:
    name = f"test_metastore_{uuid.uuid4().hex[:8]}"
    try:
        made = metastore.create(name)
        with psycopg.connect(f"{metastore.POSTGRES}/{name}") as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert {"healthchecks_heartbeat", "definitions_datastore",
                    "revisioner_run"} <= tables
            made.cli("metastore", "add-workspace", "acme", "--owner", "ops@example.com")
            assert conn.execute("SELECT slug FROM auth_workspaces").fetchall() == [("acme",)]
        # Made again: emptied first, not refused as already initialised.
        metastore.create(name)
    finally:
        metastore.drop_database(name)
