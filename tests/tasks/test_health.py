"""The checks of ``metamapper health`` read Metamapper's metastore (METAMAPPER_DB_*), as the
web app's ``/health`` does, and never show its password."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from psycopg.conninfo import conninfo_to_dict

from metamapper.health import check_beat, check_metastore
from metamapper.metastore import heartbeats, open_metastore
from tests.tasks.conftest import MetamapperDB


def test_the_metastore_check_passes_on_metamappers_tables(metamapper_db: MetamapperDB) -> None:
    result = check_metastore()
    assert result.ok, result.detail
    assert metamapper_db.env["METAMAPPER_DB_NAME"] in result.detail


def test_a_database_without_metamappers_tables_fails_the_check(
    metamapper_db: MetamapperDB, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METAMAPPER_DB_NAME", str(conninfo_to_dict(postgres_dsn)["dbname"]))
    result = check_metastore()
    assert not result.ok
    assert "healthchecks_heartbeat" in result.detail and "metastore init" in result.detail


def test_an_unreachable_metastore_fails_the_check_without_its_password(
    metamapper_db: MetamapperDB, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METAMAPPER_DB_PORT", "1")
    monkeypatch.setenv("METAMAPPER_DB_PASSWORD", "TopSecret")
    for result in (check_metastore(), check_beat(timedelta(minutes=3))):
        assert not result.ok
        assert "TopSecret" not in result.detail


def test_the_beat_check_judges_the_heartbeats_age(metamapper_db: MetamapperDB) -> None:
    assert check_beat(timedelta(minutes=3)).detail == "no heartbeat recorded yet"
    with open_metastore() as conn:
        heartbeats.beat(conn, datetime.now(UTC) - timedelta(minutes=4))
    assert not check_beat(timedelta(minutes=3)).ok
    with open_metastore() as conn:
        heartbeats.beat(conn)
    assert check_beat(timedelta(minutes=3)).ok
