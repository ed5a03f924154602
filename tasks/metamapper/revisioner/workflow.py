"""The steps of a run, independent of Celery: the tasks call them, and so does
``metamapper inspect`` to run them all at once, in-process.

1. :func:`snapshot`: inspect the datastore, match its schemas with the stored ones,
   store each schema's inspection.
2. :func:`process_schema` (once per schema, in parallel): diff the schema against the
   stored catalog, stage the revisions.
3. :func:`complete`: in one transaction, add DROPPED revisions for stored schemas
   that are gone, apply every staged revision, set the final status.
"""

from __future__ import annotations

import logging

from metamapper.catalog import Schema, schema_from_dict, to_dict
from metamapper.inspectors import inspect
from metamapper.metastore import catalog_store, revisions, runs
from metamapper.metastore.connection import Database
from metamapper.metastore.datastores import Datastore
from metamapper.revisioner.diff import diff_schema, dropped_schemas, match
from metamapper_urls import redact_text

logger = logging.getLogger(__name__)

DONE = "DONE"
FAILED = "FAILED"


def snapshot(db: Database, run: runs.Run, datastore: Datastore) -> list[str]:
    """Inspect ``datastore`` and store the result; returns the schema names.

    Raises :class:`~metamapper.inspectors.DatastoreUnavailable` (worth a retry) or
    :class:`~metamapper.inspectors.InspectionError`.
    """
    inspected = inspect(datastore.connection_url())
    stored = catalog_store.load(db, datastore.id)
    pairs, _, _ = match(stored, inspected)
    stored_ids = {id(new): old.id for old, new in pairs}
    runs.save_snapshot(
        db, run.id, [(s.name, stored_ids.get(id(s)), to_dict(s)) for s in inspected]
    )
    return [s.name for s in inspected]


def process_schema(db: Database, run: runs.Run, name: str) -> bool:
    """Diff and stage one schema; True if it was the run's last schema to finish."""
    try:
        stored_id, data = runs.load_snapshot(db, run.id, name)
        stored = _stored_schema(db, run.datastore_id, stored_id)
        staged = diff_schema(stored, schema_from_dict(data))
        status, error = DONE, None
    except Exception as exc:  # one bad schema must not fail the others
        logger.exception("run %s: schema %r could not be processed", run.id, name)
        staged, status, error = [], FAILED, redact_text(str(exc))
    with db.transaction():
        if not runs.finish_schema(db, run.id, name, status, error):
            return False
        revisions.stage(db, run.id, run.datastore_id, name, staged)
        return runs.count_finished_schema(db, run.id)


def _stored_schema(db: Database, datastore_id: int, schema_id: str | None) -> Schema | None:
    if schema_id is None:
        return None
    return next(s for s in catalog_store.load(db, datastore_id) if s.id == schema_id)


def complete(db: Database, run_id: int) -> str | None:
    """Apply the run's revisions and set its final status (None if it was already final)."""
    with db.transaction():
        run = runs.get(db, run_id)
        if run is None or run.status != runs.STARTED or run.schemas_total is None:
            return None
        statuses = list(runs.schema_statuses(db, run_id).values())
        failed = statuses.count(FAILED)
        if not statuses or not failed:
            status = runs.SUCCESS
        elif failed < len(statuses):
            status = runs.PARTIAL
        else:
            status = runs.FAILURE
        error = f"{failed} of {len(statuses)} schemas failed" if failed else None
        if not runs.finish(db, run_id, status, error):
            return None
        if status != runs.FAILURE:
            stored = catalog_store.load(db, run.datastore_id)
            kept = runs.matched_schema_ids(db, run_id)
            for revision in dropped_schemas(stored, kept):
                revisions.stage(db, run_id, run.datastore_id, revision.path, [revision])
            catalog_store.apply(db, run.datastore_id, revisions.staged(db, run_id))
            revisions.mark_applied(db, run_id, runs.now())
        return status


def fail(db: Database, run_id: int, error: str) -> None:
    with db.transaction():
        runs.finish(db, run_id, runs.FAILURE, redact_text(error))


def run_now(db: Database, datastore: Datastore) -> runs.Run:
    """Every step of a run, in this process (raises if the datastore cannot be inspected)."""
    with db.transaction():
        run_id = runs.create(db, datastore.id)
    run = runs.begin(db, run_id)
    assert run is not None
    try:
        names = snapshot(db, run, datastore)
    except Exception as exc:
        fail(db, run_id, str(exc))
        raise
    for name in names:
        process_schema(db, run, name)
    complete(db, run_id)
    final = runs.get(db, run_id)
    assert final is not None
    return final
