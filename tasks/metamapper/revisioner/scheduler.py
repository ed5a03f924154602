"""``app.revisioner.tasks.v1.scheduler.*``: the beat's side of the revisioner.

- ``create_runs``: a run for each enabled datastore whose interval has passed (or for
  the datastore named by its slug), never a second one while one is unfinished;
- ``queue_runs``: send ``start_run`` for each run not started yet, spread evenly over
  ``countdown_in_minutes`` so that the starts do not all hit the workers and datastores at
  once (upstream draws each start at random in that window). Each run is queued once:
  its start task is recorded with the message's id before the message goes;
- ``detect_run_timeouts``: runs unfinished ``minutes`` after they were created get their
  pending tasks revoked and are finished (failed), with the incident contacts alerted.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import uuid

from metamapper.celery import app
from metamapper.metastore import open_metastore
from metamapper.metastore import revisioner as runs
from metamapper.revisioner.core import alert_incident_contacts, start_run

logger = logging.getLogger(__name__)


@app.task(name="app.revisioner.tasks.v1.scheduler.create_runs")
def create_runs(datastore_slug: str | None = None, *args: Any, **kwargs: Any) -> list[str]:
    with open_metastore() as conn:
        created = runs.create_due(conn, datastore_slug)
    logger.info("created %d run(s)", len(created))
    return created


@app.task(name="app.revisioner.tasks.v1.scheduler.queue_runs")
def queue_runs(
    datastore_slug: str | None = None, countdown_in_minutes: float = 15, *args: Any, **kwargs: Any
) -> int:
    window = max(float(countdown_in_minutes), 0.0) * 60
    queued = 0
    with open_metastore() as conn:
        waiting = runs.unqueued(conn, datastore_slug)
        for position, run in enumerate(waiting):
            task_id = uuid()
            # Recorded first, in the transaction that sends: a message that could not be
            # sent leaves no record, and a record is never written twice.
            with conn.transaction():
                if not runs.mark_queued(conn, run.id, task_id):
                    continue
                start_run.apply_async(
                    (run.id,), task_id=task_id, countdown=window * position / len(waiting)
                )
            queued += 1
    logger.info("queued %d run(s) over %.0f s", queued, window)
    return queued


@app.task(name="app.revisioner.tasks.v1.scheduler.detect_run_timeouts")
def detect_run_timeouts(minutes: float = 60, *args: Any, **kwargs: Any) -> list[str]:
    finished = []
    with open_metastore() as conn:
        for run_id in runs.timed_out(conn, minutes):
            with conn.transaction():
                revoked = runs.revoke_pending(conn, run_id)
                run = runs.finish(conn, run_id)
            if revoked:
                app.control.revoke(revoked)
            if run is not None:
                finished.append(run.id)
                logger.warning("run %s timed out after %s minutes: %s", run.id, minutes,
                               run.status)
                if run.failed:
                    alert_incident_contacts.delay(run.datastore_id, run.status)
    return finished
