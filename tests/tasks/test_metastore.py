"""The metastore on SQLite and PostgreSQL: migrations, datastores, the life of a run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from metamapper.metastore import catalog_store, connect, datastores, revisions, runs, schema
from metamapper.metastore.connection import Database, default_database_url
from metamapper.metastore.datastores import DatastoreError
from metamapper.metastore.migrations import LATEST, applied_versions, migrate
from metamapper.revisioner import workflow
from tests.tasks.conftest import MetamapperDB


@pytest.fixture
def db(metastore_db: Database) -> Database:
    """Every test here runs on both metastores (``metastore_db``'s parameters)."""
    return metastore_db


def test_migrations_apply_once(db: Database) -> None:
    assert applied_versions(db) == [LATEST]
    assert migrate(db) == []


def test_default_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("METAMAPPER_DATABASE_URL", raising=False)
    monkeypatch.setenv("METAMAPPER_HOME", str(tmp_path))
    assert default_database_url() == f"sqlite:///{tmp_path}/metamapper.db"
    monkeypatch.setenv("METAMAPPER_DATABASE_URL", "postgresql://m@db/metamapper")
    assert default_database_url() == "postgresql://m@db/metamapper"


def test_datastores(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    shop = datastores.add(db, "shop", url="postgresql://app:s3cret@db/shop", interval_minutes=30)
    assert (shop.engine, shop.interval_minutes) == ("postgresql", 30)
    assert shop.display_url == "postgresql://app:***@db/shop"
    ext = datastores.add(db, "ext", url_env="EXT_URL", engine="mysql")
    assert ext.display_url == "$EXT_URL"
    with pytest.raises(DatastoreError, match="EXT_URL is not set"):
        ext.connection_url()
    monkeypatch.setenv("EXT_URL", "mysql://u:p@h/x")
    assert ext.connection_url() == "mysql://u:p@h/x"

    with pytest.raises(DatastoreError, match="already exists"):
        datastores.add(db, "shop", url="sqlite:///x.db")
    with pytest.raises(DatastoreError, match="engine is required"):
        datastores.add(db, "other", url_env="X")
    with pytest.raises(ValueError, match="unsupported"):
        datastores.add(db, "other", url="oracle://h/x")
    assert [d.name for d in datastores.list_all(db)] == ["ext", "shop"]
    assert datastores.remove(db, "shop")
    assert not datastores.remove(db, "shop")
    assert [d.name for d in datastores.list_all(db)] == ["ext"]


def _age_runs(db: Database, by: timedelta) -> None:
    for run in runs.recent(db, limit=1000):
        db.execute("UPDATE runs SET created_at = ? WHERE id = ?", (run.created_at - by, run.id))


def test_create_due(db: Database) -> None:
    hourly = datastores.add(db, "hourly", url="sqlite:///a.db")
    daily = datastores.add(db, "daily", url="sqlite:///b.db", interval_minutes=24 * 60)
    first = runs.create_due(db)
    assert len(first) == 2
    assert runs.create_due(db) == []  # runs are still unfinished
    with db.transaction():
        for run_id in first:
            runs.finish(db, run_id, runs.SUCCESS)
    assert runs.create_due(db) == []  # interval not yet passed

    _age_runs(db, timedelta(minutes=59, seconds=30))  # within the leeway of an hour
    [due] = runs.create_due(db)
    run = runs.get(db, due)
    assert run is not None and run.datastore_id == hourly.id and run.status == runs.PENDING
    assert daily.id not in {r.datastore_id for r in runs.pending(db)}


def test_timeouts(db: Database) -> None:
    datastores.add(db, "a", url="sqlite:///a.db")
    [run_id] = runs.create_due(db)
    assert runs.timed_out(db, timedelta(hours=1)) == []
    _age_runs(db, timedelta(hours=2))
    assert runs.timed_out(db, timedelta(hours=1)) == [run_id]
    workflow.fail(db, run_id, "timed out")
    run = runs.get(db, run_id)
    assert run is not None and (run.status, run.error) == (runs.FAILURE, "timed out")
    assert runs.timed_out(db, timedelta(hours=1)) == []


@pytest.fixture
def multi_schema_datastore(postgres_dsn: str) -> str:
    """A PostgreSQL datastore with schemas a..f, one table each."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        for name in "abcdef":
            conn.execute(f"CREATE SCHEMA {name}; CREATE TABLE {name}.t (id INTEGER)".encode())
    return postgres_dsn


def _started(db: Database, url: str) -> tuple[runs.Run, list[str]]:
    datastore = datastores.add(db, "pg", url=url)
    with db.transaction():
        run_id = runs.create(db, datastore.id)
    run = runs.begin(db, run_id)
    assert run is not None
    return run, workflow.snapshot(db, run, datastore)


def test_redelivered_steps_are_harmless(tmp_path: Path, multi_schema_datastore: str) -> None:
    with connect(f"sqlite:///{tmp_path / 'm.db'}") as db:
        run, names = _started(db, multi_schema_datastore)
        assert runs.begin(db, run.id) is None  # the snapshot is taken: no second start
        lasts = [workflow.process_schema(db, run, name) for name in names]
        assert lasts == [False] * (len(names) - 1) + [True]
        assert workflow.process_schema(db, run, names[0]) is False  # a duplicate delivery
        assert workflow.complete(db, run.id) == runs.SUCCESS
        assert workflow.complete(db, run.id) is None
        created = revisions.history(db, run.datastore_id, run_id=run.id)
        assert sorted(r.path for r in created) == sorted(names)


def test_failed_schema_makes_a_partial_run(tmp_path: Path, multi_schema_datastore: str) -> None:
    with connect(f"sqlite:///{tmp_path / 'm.db'}") as db:
        run, names = _started(db, multi_schema_datastore)
        db.execute("UPDATE run_schemas SET snapshot = 'not json' WHERE name = 'a'")
        for name in names:
            workflow.process_schema(db, run, name)
        assert workflow.complete(db, run.id) == runs.PARTIAL
        stored = {s.name for s in catalog_store.load(db, run.datastore_id)}
        assert stored == set(names) - {"a"}
        final = runs.get(db, run.id)
        assert final is not None and final.error == f"1 of {len(names)} schemas failed"


def test_exactly_one_schema_finishes_last(multi_schema_datastore: str) -> None:
    """Schemas processed at the same time, each on its own connection (PostgreSQL)."""
    with connect(multi_schema_datastore) as db:
        run, names = _started(db, multi_schema_datastore)

    def process(name: str) -> bool:
        with connect(multi_schema_datastore) as own:
            return workflow.process_schema(own, run, name)

    with ThreadPoolExecutor(len(names)) as pool:
        lasts = list(pool.map(process, names))
    assert lasts.count(True) == 1


METAMAPPER_TABLES = {
    "auth_users", "auth_workspaces", "auth_memberships", "definitions_datastore",
    "definitions_schema", "definitions_table", "definitions_column", "definitions_table_usage",
    "definitions_table_usage_exists", "revisioner_run", "revisioner_runtask", "checks",
    "checks_query", "checks_execution", "checks_expectation", "checks_expectationresult",
    "checks_alertrule", "healthchecks_heartbeat", "audit_activity", "sso_domains",
}


def test_schema_has_metamapper_tables(metamapper_db: MetamapperDB) -> None:
    with psycopg.connect(metamapper_db.dsn, autocommit=True) as conn:
        assert schema.tables(conn) >= METAMAPPER_TABLES
        with pytest.raises(schema.SchemaExists):
            schema.create(conn)
        password_type = conn.execute(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'definitions_datastore' AND column_name = 'password'"
        ).fetchone()
        assert password_type == ("bytea",)
        # Django's foreign keys: checked at commit, so rows may be written in any order.
        deferred = conn.execute(
            "SELECT bool_and(condeferrable AND condeferred) FROM pg_constraint WHERE contype = 'f'"
        ).fetchone()
        assert deferred == (True,)
