"""A ``start_run`` whose run the metastore does not show: Metamapper's web app sends it
from inside the transaction that writes the run, so a worker may take it first. It is
retried until the run appears, and refused loudly if it never does; a run that is there
but done is a message delivered again, and nothing happens. The later steps, whose
messages the worker sends once their run is committed, take a run gone for one
hard-deleted since: they do nothing, with a line at INFO."""

from __future__ import annotations

import json
import logging
import urllib.error
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from devenv.controlplane import free_port
from devenv.scrape import scrape, total
from devenv.waiting import wait_until
from metamapper.metastore import datastores, open_metastore, workspaces
from metamapper.metastore import revisioner as runs
from metamapper.metastore.datastores import ConnectionSettings
from metamapper.revisioner import steps
from metamapper.upstream import deletes
from tests.tasks.conftest import MetamapperDB, Process
from tests.tasks.test_definitions import register
from tests.tasks.test_revisioner_tasks import finished, new_run, task_states, web_app

START_RUN = "app.revisioner.tasks.v1.core.start_run"
#: The test worker's retries of a run not there: 0.5 + 1 + 2 + 4 = 7.5 s before it gives
#: up; and of an unreachable datastore (more than Celery's default limit, 3).
RETRIES = 4


@dataclass(frozen=True)
class Worker:
    process: Process
    metrics_port: int

    def count(self, metric: str, **labels: str) -> float:
        """The metric's total; 0 while the endpoint answers 500 (prometheus_client's
        multiprocess collector can fail on a pool process's metrics file as that process
        creates it, seen once with the machine under load; the next scrape reads it)."""
        try:
            samples = scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")
        except urllib.error.HTTPError as error:
            if error.code != 500:
                raise
            return 0
        return total(samples, metric, name=START_RUN, **labels)


@pytest.fixture
def worker(redis_url: str, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
           process_env: Callable[..., dict[str, str]], tmp_path: Path) -> Worker:
    port = free_port()
    env = process_env(
        METAMAPPER_BROKER_URL=redis_url,
        METAMAPPER_CELERY_SETTINGS=json.dumps({
            "metamapper_unknown_id_max_retries": RETRIES,
            "metamapper_unknown_id_retry_delay_seconds": 0.5,
            "metamapper_inspect_max_retries": RETRIES,
            "metamapper_inspect_retry_delay_seconds": 0.1,
        }),
        METAMAPPER_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
        **metamapper_db.env,
    )
    return Worker(start_worker(env, queues="revisioner"), port)


def lines_with(log: str, *texts: str) -> list[str]:
    return [line for line in log.splitlines() if all(text in line for text in texts)]


def test_a_start_sent_before_its_run_is_committed_waits_for_it(
    worker: Worker, redis_url: str, metamapper_db: MetamapperDB, postgres_dsn: str,
) -> None:
    with open_metastore() as conn:
        datastore_id = register(conn, postgres_dsn, "postgresql")
    # The web app's datastore creation: the run written and start_run sent within one
    # transaction, committed only after the worker has looked for the run.
    with psycopg.connect(metamapper_db.dsn) as web_app_db:
        run_id = new_run(web_app_db, datastore_id)
        web_app(redis_url).send_task(START_RUN, args=[run_id])
        worker.process.wait_for_log(f"no run '{run_id}' in the metastore (yet): retry 1")
        web_app_db.commit()
    with open_metastore() as conn:
        run = finished(conn, run_id)
        assert (run.status, run.tasks_count, run.fails_count) == ("SUCCESS", 3, 0)
        assert task_states(conn, run_id)["start_run"] == ("SUCCESS", None)
    assert wait_until(lambda: worker.count("celery_task_succeeded_total"), 30,
                      what="start_run done") == 1
    assert worker.count("celery_task_failed_total") == 0
    assert not lines_with(worker.process.log, "ERROR")


def test_a_run_that_never_appears_is_retried_then_refused_loudly(
    worker: Worker, redis_url: str,
) -> None:
    run_id = uuid.uuid4().hex
    web_app(redis_url).send_task(START_RUN, args=[run_id])
    assert wait_until(lambda: worker.count("celery_task_failed_total", exception="Refused"),
                      30, what="start_run failed") == 1
    log = worker.process.log
    assert len(lines_with(log, f"no run '{run_id}' in the metastore (yet): retry")) == RETRIES
    assert worker.count("celery_task_retried_total") == RETRIES
    [error] = lines_with(log, "ERROR")
    assert START_RUN in error and run_id in error
    assert f"after {RETRIES} retries over 7.5 s" in error
    assert worker.count("celery_task_succeeded_total") == 0
    # Rejected without requeue: not delivered again, nothing left behind.
    client = redis.Redis.from_url(redis_url)
    assert client.llen("revisioner") == 0 and client.hlen("unacked") == 0
    client.close()


def test_a_finished_run_is_a_message_delivered_again(
    worker: Worker, redis_url: str, postgres_dsn: str,
) -> None:
    with open_metastore() as conn:
        datastore_id = register(conn, postgres_dsn, "postgresql")
        run_id = new_run(conn, datastore_id)
        conn.execute("UPDATE revisioner_run SET finished_at = now() WHERE id = %s", (run_id,))
        web_app(redis_url).send_task(START_RUN, args=[run_id])
        assert wait_until(lambda: worker.count("celery_task_succeeded_total"), 30,
                          what="start_run done") == 1
        assert runs.tasks(conn, run_id) == []  # nothing claimed, nothing started
    assert lines_with(worker.process.log, f"run {run_id}: not waiting to start")
    assert worker.count("celery_task_retried_total") == 0
    assert worker.count("celery_task_failed_total") == 0


def test_claiming_tells_an_unknown_run_from_one_that_is_done(
    metastore: psycopg.Connection, postgres_dsn: str,
) -> None:
    unknown = uuid.uuid4().hex
    with pytest.raises(runs.UnknownRun) as raised:
        runs.claim(metastore, unknown, runs.start_path(unknown), "m1")
    assert raised.value.run_id == unknown
    run_id = new_run(metastore, register(metastore, postgres_dsn, "postgresql"))
    assert runs.claim(metastore, run_id, runs.start_path(run_id), "m1") is not None
    assert runs.claim(metastore, run_id, runs.start_path(run_id), "m2") is None  # taken
    metastore.execute("UPDATE revisioner_run SET finished_at = now() WHERE id = %s", (run_id,))
    assert runs.claim(metastore, run_id, runs.complete_path(run_id), "m3") is None  # done


def test_an_unreachable_datastore_is_retried_as_often_as_configured(
    worker: Worker, redis_url: str,
) -> None:
    """Each retry asks Celery for the configured limit: without it Celery applies the
    task's default, 3, fails the 4th retry, and the run is left unfinished."""
    with open_metastore() as conn:
        user = workspaces.create_user(conn, "owner@example.org")
        workspace = workspaces.create_workspace(conn, "acme", "Acme", user)
        datastore_id = datastores.register(
            conn, workspace.id, "Warehouse",
            ConnectionSettings("postgresql", "127.0.0.1", 1, "dw", "app", "secret"),
        )
        run_id = new_run(conn, datastore_id)
        web_app(redis_url).send_task(START_RUN, args=[run_id])
        run = finished(conn, run_id)
        assert (run.status, run.tasks_count, run.fails_count) == ("FAILURE", 1, 1)
        [(status, error)] = task_states(conn, run_id).values()
        assert status == "FAILURE" and error is not None and "unreachable" in error
    assert worker.process.log.count("datastore unreachable, retry in") == RETRIES
    assert worker.count("celery_task_retried_total") == RETRIES


def _hard_delete(conn: psycopg.Connection, datastore_id: str) -> None:
    """The web app's hard delete of a datastore, as this worker performs it."""
    assert deletes.delete_cascading(conn, "definitions_datastore", "id", [datastore_id]) > 0


def test_a_completion_delivered_again_after_a_hard_delete_does_nothing_quietly(
    metastore: psycopg.Connection, postgres_dsn: str, caplog: pytest.LogCaptureFixture,
) -> None:
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    run_id = new_run(metastore, datastore_id)
    _hard_delete(metastore, datastore_id)
    with caplog.at_level(logging.INFO, logger=steps.__name__):
        assert steps.complete(metastore, run_id, "m1") is None
    [record] = caplog.records
    assert record.levelno == logging.INFO and run_id in record.getMessage()
    assert runs.get(metastore, run_id) is None and runs.tasks(metastore, run_id) == []


def test_a_schema_whose_run_is_hard_deleted_before_its_claim_does_nothing_quietly(
    metastore: psycopg.Connection, postgres_dsn: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The delete lands between reading the schema task and claiming it (read after the
    delete, the task is gone, which process_schema has always taken quietly)."""
    datastore_id = register(metastore, postgres_dsn, "postgresql")
    run_id = new_run(metastore, datastore_id)
    path = runs.schema_path(datastore_id, run_id, "public")
    [task_id] = runs.add_schema_tasks(metastore, run_id, [(path, {"name": "public"})])
    read = runs.schema_task

    def read_then_deleted(conn: psycopg.Connection, run_task_id: int) -> Any:
        found = read(conn, run_task_id)
        _hard_delete(conn, datastore_id)
        return found

    monkeypatch.setattr(runs, "schema_task", read_then_deleted)
    with caplog.at_level(logging.INFO, logger=steps.__name__):
        assert steps.process(metastore, task_id, "m1") is None
    [record] = caplog.records
    assert record.levelno == logging.INFO and run_id in record.getMessage()
    assert runs.get(metastore, run_id) is None and runs.tasks(metastore, run_id) == []
