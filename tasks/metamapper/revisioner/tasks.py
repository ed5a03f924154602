"""The revisioner's Celery tasks (queue ``revisioner``).

Beat sends ``create_runs`` (a PENDING run for each datastore that is due) and
``queue_runs`` (start them, spread over a window so that they do not all hit the
workers and datastores at once). Each run then goes ``start_run`` -> one
``process_schema`` per schema -> ``complete_run``. Completion needs no result
backend: the schema that finishes last sends ``complete_run``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from metamapper.celery import app
from metamapper.inspectors import DatastoreUnavailable, InspectionError
from metamapper.metastore import connect, datastores, runs
from metamapper.metastore.datastores import DatastoreError
from metamapper.revisioner import workflow
from metamapper_urls import redact_text

logger = logging.getLogger(__name__)


@app.task(name="metamapper.revisioner.create_runs")
def create_runs() -> list[int]:
    with connect() as db:
        created = runs.create_due(db)
    logger.info("created %d runs", len(created))
    return created


@app.task(name="metamapper.revisioner.queue_runs")
def queue_runs() -> int:
    spread = float(app.conf.metamapper_run_spread_seconds)
    with connect() as db:
        pending = runs.pending(db)
        for position, run in enumerate(pending):
            start_run.apply_async((run.id,), countdown=spread * position / len(pending))
            runs.mark_queued(db, run.id)
    logger.info("queued %d runs over %.0f s", len(pending), spread)
    return len(pending)


@app.task(name="metamapper.revisioner.start_run", bind=True)
def start_run(self: Task, run_id: int) -> None:
    with connect() as db:
        run = runs.begin(db, run_id)
        if run is None:
            logger.info("run %s is not waiting to start; nothing to do", run_id)
            return
        datastore = datastores.get_by_id(db, run.datastore_id)
        try:
            names = workflow.snapshot(db, run, datastore)
        except DatastoreUnavailable as exc:
            retries = self.request.retries
            if retries < app.conf.metamapper_inspect_max_retries:
                delay = get_exponential_backoff_interval(
                    factor=app.conf.metamapper_inspect_retry_delay_seconds,
                    retries=retries,
                    maximum=app.conf.metamapper_inspect_retry_max_delay_seconds,
                )
                logger.warning(
                    "run %s: datastore %r unavailable, retry in %s s: %s",
                    run_id, datastore.name, delay, redact_text(str(exc)),
                )
                raise self.retry(countdown=delay, max_retries=None) from None
            workflow.fail(db, run_id, f"datastore unavailable: {exc}")
            return
        except (InspectionError, DatastoreError, SoftTimeLimitExceeded) as exc:
            workflow.fail(db, run_id, f"{type(exc).__name__}: {exc}")
            return
    logger.info("run %s: %d schemas to process", run_id, len(names))
    if not names:
        complete_run.delay(run_id)
    for name in names:
        process_schema.delay(run_id, name)


@app.task(name="metamapper.revisioner.process_schema")
def process_schema(run_id: int, schema: str) -> None:
    with connect() as db:
        run = runs.get(db, run_id)
        if run is None or run.status != runs.STARTED:
            return
        last = workflow.process_schema(db, run, schema)
    if last:
        complete_run.delay(run_id)


@app.task(name="metamapper.revisioner.complete_run")
def complete_run(run_id: int) -> str | None:
    with connect() as db:
        status = workflow.complete(db, run_id)
    if status is not None:
        logger.info("run %s finished: %s", run_id, status)
    return status


@app.task(name="metamapper.revisioner.detect_run_timeouts")
def detect_run_timeouts() -> list[int]:
    timeout = timedelta(seconds=float(app.conf.metamapper_run_timeout_seconds))
    with connect() as db:
        expired = runs.timed_out(db, timeout)
        for run_id in expired:
            workflow.fail(db, run_id, f"timed out after {timeout}")
    if expired:
        logger.warning("runs timed out: %s", expired)
    return expired
