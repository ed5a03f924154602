"""``app.revisioner.tasks.v1.core.*``: one run of the revisioner, on Metamapper's metastore.

``start_run(run_id)`` inspects the run's datastore and writes one run task per schema
with its definition (:mod:`metamapper.revisioner.collector`), then sends
``process_schema(run_task_id)`` for each. Each upserts its schema
(:func:`metamapper.metastore.definitions.write_schema`); the one that finishes last sends
``complete_run(run_id)`` (no chord, so no result backend), which soft-deletes what the
run did not see, corrects renames and finishes the run. A failed run (FAILURE or
PARTIAL, as the web app reads it) sends ``alert_incident_contacts``, which e-mails each
of the datastore's incident contacts through ``app.notifications.tasks.deliver``, as the
web app's worker does.

Beyond upstream: an unreachable datastore is retried with exponential backoff before
the run fails; a message delivered twice (a retry, a lost worker, a duplicate) does
each step once (:func:`metamapper.metastore.revisioner.claim`); no password reaches a run
task's error or a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from metamapper.celery import app
from metamapper.inspectors import DatastoreUnavailable, inspect
from metamapper.metastore import datastores, definitions, open_metastore
from metamapper.metastore import revisioner as runs
from metamapper.revisioner.collector import SchemaDefinition, collect
from metamapper.revisioner.version import check_version
from metamapper_urls import redact_text

logger = logging.getLogger(__name__)

#: The e-mail task of Metamapper's web app, and the template the alert uses.
DELIVER = "app.notifications.tasks.deliver"


@app.task(name="app.revisioner.tasks.v1.core.start_run", bind=True)
def start_run(self: Task, run_id: str) -> None:
    """Inspect the run's datastore and hand each schema to ``process_schema``."""
    with open_metastore() as conn:
        task = runs.claim(conn, run_id, runs.start_path(run_id), self.request.id)
        if task is None:
            logger.info("run %s: not waiting to start (finished, started elsewhere or gone)",
                        run_id)
            return
        run = runs.get(conn, run_id)
        assert run is not None
        try:
            datastore = datastores.load(conn, run.datastore_id)
            schemas = collect(datastore.id, inspect(datastore.connection.url()))
        except DatastoreUnavailable as exc:
            retries = self.request.retries
            reason = redact_text(str(exc))
            if retries < app.conf.metamapper_inspect_max_retries:
                delay = get_exponential_backoff_interval(
                    factor=app.conf.metamapper_inspect_retry_delay_seconds,
                    retries=retries,
                    maximum=app.conf.metamapper_inspect_retry_max_delay_seconds,
                )
                logger.warning("run %s: datastore unreachable, retry in %s s: %s",
                               run_id, delay, reason)
                runs.note_error(conn, task.id, reason)
                raise self.retry(countdown=delay, max_retries=None) from None
            _fail_start(conn, run_id, task.id, f"datastore unreachable: {reason}")
            return
        except Exception as exc:  # the run fails, as upstream's does, whatever went wrong
            logger.exception("run %s: inspection failed", run_id)
            _fail_start(conn, run_id, task.id, redact_text(f"{type(exc).__name__}: {exc}"))
            return
        pending = runs.add_schema_tasks(conn, run_id, [
            (runs.schema_path(datastore.id, run_id, schema.name), schema.to_json())
            for schema in schemas
        ])
        runs.finish_task(conn, task.id)
    logger.info("run %s: %d schemas to process", run_id, len(pending))
    for task_id in pending:
        process_schema.delay(task_id)
    if not pending:
        complete_run.delay(run_id)
    check_version.delay(run.datastore_id)


def _fail_start(conn: Any, run_id: str, task_id: int, error: str) -> None:
    runs.finish_task(conn, task_id, error)
    finished = runs.finish(conn, run_id)
    if finished is not None:
        check_version.delay(finished.datastore_id)
        if finished.failed:
            alert_incident_contacts.delay(finished.datastore_id, finished.status)


@app.task(name="app.revisioner.tasks.v1.core.process_schema", bind=True)
def process_schema(self: Task, run_task_id: int) -> None:
    """Write one schema's definition; the run's last schema sends ``complete_run``."""
    with open_metastore() as conn:
        found = runs.schema_task(conn, run_task_id)
        if found is None:
            logger.info("run task %s: gone (its run finished)", run_task_id)
            return
        task, definition = found
        if runs.claim(conn, task.run_id, task.path, self.request.id) is None:
            logger.info("run task %s: already done or being done", run_task_id)
            return
        run = runs.get(conn, task.run_id)
        assert run is not None
        owner = definitions.Owner(run.id, run.datastore_id, run.workspace_id)
        try:
            definitions.write_schema(conn, owner, SchemaDefinition.from_json(definition))
            error = None
        except Exception as exc:  # one bad schema must not fail the others
            logger.exception("run %s: %s could not be written", run.id, task.path)
            error = redact_text(f"{type(exc).__name__}: {exc}")
        last = runs.finish_schema_task(conn, run.id, task.id, error)
    if last:
        complete_run.delay(run.id)


@app.task(name="app.revisioner.tasks.v1.core.complete_run", bind=True)
def complete_run(self: Task, run_id: str, **kwargs: Any) -> None:
    """Soft-delete what the run did not see, correct renames, finish the run."""
    with open_metastore() as conn:
        task = runs.claim(conn, run_id, runs.complete_path(run_id), self.request.id)
        if task is None:
            logger.info("run %s: already completed or being completed", run_id)
            return
        run = runs.get(conn, run_id)
        assert run is not None
        try:
            definitions.complete(
                conn, definitions.Owner(run.id, run.datastore_id, run.workspace_id)
            )
            error = None
        except Exception as exc:
            logger.exception("run %s: could not be completed", run_id)
            error = redact_text(f"{type(exc).__name__}: {exc}")
        runs.finish_task(conn, task.id, error)
        finished = runs.finish(conn, run_id)
    if finished is None:
        return
    logger.info("run %s finished: %s", run_id, finished.status)
    if finished.failed:
        alert_incident_contacts.delay(finished.datastore_id, finished.status)


@app.task(name="app.revisioner.tasks.v1.core.alert_incident_contacts")
def alert_incident_contacts(datastore_id: str, status: str) -> int:
    """E-mail each incident contact of the datastore that its sync failed; returns how
    many e-mails were sent off."""
    with open_metastore() as conn:
        datastore = datastores.load(conn, datastore_id, include_deleted=True)
    for contact in datastore.incident_contacts:
        app.send_task(DELIVER, kwargs={
            "namespace": "definitions",
            "template": "datastore_sync_failure",
            "subject": f'Sync failed for your "{datastore.name}" datastore in'
                       f" {datastore.workspace_slug}",
            "to_email": contact,
            "template_dict": {
                "datastore_name": datastore.name,
                "datastore_slug": datastore.slug,
                "workspace_slug": datastore.workspace_slug,
            },
        })
    logger.info("datastore %s: run %s, %d incident contacts told",
                datastore_id, status, len(datastore.incident_contacts))
    return len(datastore.incident_contacts)
