"""The steps of a run on Metamapper's metastore, in this process: each step once, whatever
the deliveries; the last schema to finish, exactly once; a failed schema makes a PARTIAL
run."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest

from metamapper.metastore import additions, datastores, open_metastore
from metamapper.metastore import revisioner as runs
from metamapper.revisioner import steps
from metamapper.revisioner.collector import SchemaDefinition
from tests.tasks.conftest import MetamapperDB
from tests.tasks.test_definitions import register


def _started(conn: psycopg.Connection, datastore_id: str,
             definitions: list[tuple[str, dict[str, object]]]) -> tuple[str, list[int]]:
    """A run whose start wrote these (name, definition) schema tasks."""
    [run_id] = runs.create_due(conn, datastores.load(conn, datastore_id).slug)
    started = steps.claim_start(conn, run_id, uuid.uuid4().hex)
    assert started is not None
    pending = runs.add_schema_tasks(conn, run_id, [
        (runs.schema_path(datastore_id, run_id, name), definition)
        for name, definition in definitions
    ])
    runs.finish_task(conn, started.task_id)
    return run_id, pending


def _empty(name: str) -> dict[str, object]:
    return SchemaDefinition(name, name, name, ()).to_json()


def test_each_step_happens_once(metastore: psycopg.Connection, postgres_dsn: str) -> None:
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    run_id, [task_id] = _started(metastore, datastore_id, [("a", _empty("a"))])
    assert steps.claim_start(metastore, run_id, "another message") is None
    assert steps.process(metastore, task_id, "m1") == run_id
    assert steps.process(metastore, task_id, "m1") is None  # the same message again
    assert steps.process(metastore, task_id, "m2") is None
    finished = steps.complete(metastore, run_id, "m3")
    assert finished is not None and finished.status == "SUCCESS"
    assert steps.complete(metastore, run_id, "m4") is None
    assert steps.complete(metastore, run_id, "m3") is None
    # The definitions were only kept until the run finished.
    assert runs.schema_task(metastore, task_id) is None


def test_of_schemas_finishing_at_once_one_is_last(
    metastore: psycopg.Connection, metamapper_db: MetamapperDB, postgres_dsn: str
) -> None:
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    names = [f"s{n}" for n in range(8)]
    run_id, pending = _started(metastore, datastore_id, [(n, _empty(n)) for n in names])

    def process(task_id: int) -> str | None:
        with open_metastore() as own:
            return steps.process(own, task_id, uuid.uuid4().hex)

    with ThreadPoolExecutor(len(pending)) as pool:
        lasts = list(pool.map(process, pending))
    assert lasts.count(run_id) == 1 and lasts.count(None) == len(pending) - 1


def test_a_schema_that_cannot_be_written_makes_a_partial_run(
    metastore: psycopg.Connection, postgres_dsn: str
) -> None:
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    run_id, pending = _started(metastore, datastore_id, [("good", _empty("good")),
                                                         ("bad", {"name": "bad"})])
    for task_id in pending:
        steps.process(metastore, task_id, "m")
    finished = steps.complete(metastore, run_id, "m")
    assert finished is not None
    assert (finished.status, finished.tasks_count, finished.fails_count) == ("PARTIAL", 4, 1)
    [error] = [t.error for t in runs.tasks(metastore, run_id) if t.status == "FAILURE"]
    assert error is not None and "KeyError" in error


def test_run_now_and_a_refused_second(metastore: psycopg.Connection, postgres_dsn: str) -> None:
    psycopg.connect(postgres_dsn, autocommit=True).execute("CREATE TABLE t (id INT)")
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    run = steps.run_now(metastore, datastore_id)
    assert (run.status, run.tasks_count) == ("SUCCESS", 3)
    [unfinished] = runs.create_due(metastore, datastores.load(metastore, datastore_id).slug)
    with pytest.raises(steps.RunRefused):
        steps.run_now(metastore, datastore_id)
    assert [r.id for r in runs.recent(metastore, datastore_id)] == [unfinished, run.id]
    assert runs.recent(metastore, "another datastore") == []


def _age_runs(conn: psycopg.Connection, by: timedelta) -> None:
    conn.execute("UPDATE revisioner_run SET created_at = created_at - %s", (by,))


def test_runs_are_created_when_due(metastore: psycopg.Connection, postgres_dsn: str) -> None:
    hourly = register(metastore, postgres_dsn, "postgresql", name="hourly")
    metastore.execute("UPDATE definitions_datastore SET interval = '1 hour' WHERE id = %s",
                      (hourly,))
    daily = register(metastore, postgres_dsn, "postgresql", name="daily")
    disabled = register(metastore, postgres_dsn, "postgresql", name="off")
    metastore.execute("UPDATE definitions_datastore SET is_enabled = false WHERE id = %s",
                      (disabled,))
    first = runs.create_due(metastore)
    assert {r.datastore_id for r in runs.unqueued(metastore)} == {hourly, daily}
    assert runs.create_due(metastore) == []  # runs are still unfinished
    for run_id in first:
        runs.finish(metastore, run_id)
    assert runs.create_due(metastore) == []  # interval not yet passed
    _age_runs(metastore, timedelta(minutes=59, seconds=30))  # within the leeway of an hour
    [due] = runs.create_due(metastore)
    run = runs.get(metastore, due)
    assert run is not None and run.datastore_id == hourly and run.status == "PENDING"
    assert [r.id for r in runs.unqueued(metastore)] == [due]
    assert runs.mark_queued(metastore, due, "t1") and not runs.mark_queued(metastore, due, "t2")
    assert runs.unqueued(metastore) == []


def test_timed_out_runs(metastore: psycopg.Connection, postgres_dsn: str) -> None:
    register(metastore, postgres_dsn, "postgresql")
    [run_id] = runs.create_due(metastore)
    assert runs.timed_out(metastore, 60) == []
    _age_runs(metastore, timedelta(minutes=61))
    assert runs.timed_out(metastore, 60) == [run_id]
    assert runs.revoke_pending(metastore, run_id) == []  # never queued: nothing to revoke
    finished = runs.finish(metastore, run_id)
    assert finished is not None and finished.status == "FAILURE"
    assert runs.timed_out(metastore, 60) == []


def test_the_workers_tables_are_created_once_by_concurrent_workers(
    metamapper_db: MetamapperDB,
) -> None:
    ddl = "CREATE TABLE IF NOT EXISTS worker_addition_probe (id integer)"

    def create(_: int) -> None:
        with open_metastore() as own:
            additions._created.clear()  # as in a new process each time
            additions.ensure(own, ddl)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(8)))
    with open_metastore() as conn:
        assert conn.execute("SELECT count(*) FROM worker_addition_probe").fetchone() == (0,)
