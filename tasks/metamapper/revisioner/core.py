"""``app.revisioner.tasks.v1.core.*``: one run of the revisioner, on Metamapper's metastore.

``start_run(run_id)`` inspects the run's datastore and writes one run task per schema
with its definition (:mod:`metamapper.revisioner.collector`), then sends
``process_schema(run_task_id)`` for each. Each upserts its schema
(:func:`metamapper.metastore.definitions.write_schema`); the one that finishes last sends
``complete_run(run_id)`` (no chord, so no result backend), which soft-deletes what the
run did not see, corrects renames and finishes the run. A failed run (FAILURE or
PARTIAL, as the web app reads it) sends ``alert_incident_contacts``, which e-mails each
of the datastore's incident contacts through ``app.notifications.tasks.deliver``, as the
web app's worker does. The steps themselves are :mod:`metamapper.revisioner.steps`.

Beyond upstream: an unreachable datastore is retried with exponential backoff before
the run fails; a message delivered twice (a retry, a lost worker, a duplicate) does
each step once; a ``start_run`` taken before the web app committed its run waits for it
(:mod:`metamapper.uncommitted`; Celery counts one message's retries together, so those
count toward the inspection's), where upstream's fails and the run is left unstarted
until it times out; no password reaches a run task's error or a log line.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval

from metamapper.celery import app
from metamapper.inspectors import DatastoreUnavailable
from metamapper.metastore import datastores, open_metastore
from metamapper.metastore import revisioner as runs
from metamapper.revisioner import steps
from metamapper.revisioner.version import check_version
from metamapper.uncommitted import retry_or_refuse
from metamapper_urls import redact_text

logger = logging.getLogger(__name__)

#: The e-mail task of Metamapper's web app.
DELIVER = "app.notifications.tasks.deliver"


@app.task(name="app.revisioner.tasks.v1.core.start_run", bind=True)
def start_run(self: Task, run_id: str) -> None:
    """Inspect the run's datastore and hand each schema to ``process_schema``."""
    with open_metastore() as conn:
        try:
            started = steps.claim_start(conn, run_id, self.request.id)
        except runs.UnknownRun as missing:
            # The web app sends start_run before it commits the run.
            retry_or_refuse(self, missing)
        if started is None:
            logger.info("run %s: not waiting to start (finished or started by another"
                        " message)", run_id)
            return
        try:
            pending = steps.inspect_and_store(conn, started)
        except DatastoreUnavailable as exc:
            retries = self.request.retries
            reason = redact_text(str(exc))
            limit = app.conf.metamapper_inspect_max_retries
            if retries < limit:
                delay = get_exponential_backoff_interval(
                    factor=app.conf.metamapper_inspect_retry_delay_seconds,
                    retries=retries,
                    maximum=app.conf.metamapper_inspect_retry_max_delay_seconds,
                )
                logger.warning("run %s: datastore unreachable, retry in %s s: %s",
                               run_id, delay, reason)
                runs.note_error(conn, started.task_id, reason)
                # Given: max_retries=None would be Celery's default, 3, which then fails
                # the task with the run left unfinished.
                raise self.retry(countdown=delay, max_retries=limit) from None
            finished = steps.fail_start(conn, started, f"datastore unreachable: {reason}")
        except Exception as exc:  # the run fails, as upstream's does, whatever went wrong
            logger.exception("run %s: inspection failed", run_id)
            finished = steps.fail_start(conn, started, f"{type(exc).__name__}: {exc}")
        else:
            logger.info("run %s: %d schemas to process", run_id, len(pending))
            for task_id in pending:
                process_schema.delay(task_id)
            if not pending:
                complete_run.delay(run_id)
            finished = None
    check_version.delay(started.run.datastore_id)
    if finished is not None and finished.failed:
        alert_incident_contacts.delay(finished.datastore_id, finished.status)


@app.task(name="app.revisioner.tasks.v1.core.process_schema", bind=True)
def process_schema(self: Task, run_task_id: int) -> None:
    """Write one schema's definition; the run's last schema sends ``complete_run``."""
    with open_metastore() as conn:
        last_of = steps.process(conn, run_task_id, self.request.id)
    if last_of is not None:
        complete_run.delay(last_of)


@app.task(name="app.revisioner.tasks.v1.core.complete_run", bind=True)
def complete_run(self: Task, run_id: str, **kwargs: Any) -> None:
    """Soft-delete what the run did not see, correct renames, finish the run."""
    with open_metastore() as conn:
        finished = steps.complete(conn, run_id, self.request.id)
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
