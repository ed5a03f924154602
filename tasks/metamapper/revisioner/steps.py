"""The steps of a run, independent of Celery: the tasks of :mod:`.core` call them with
their message's id, and :func:`run_now` calls them all in this process.

1. :func:`start`: claim the run's start, inspect the datastore, write a run task per
   schema with its definition; returns the schema tasks to process.
2. :func:`process`: claim one schema task, record what it changes
   (:mod:`metamapper.metastore.revision_log`) and write its schema; tells whether it was
   the run's last schema to finish.
3. :func:`complete`: claim the run's completion, record the schemas gone, soft-delete and
   correct renames, finish the run.

Each step claims its run task first (:func:`metamapper.metastore.revisioner.claim`): a
message delivered again with the same id carries on, any other finds the step taken. A
run id the metastore does not hold raises
:class:`~metamapper.metastore.revisioner.UnknownRun` to the start, which waits for it
(:mod:`metamapper.uncommitted`: the web app sends the start before it commits the run).
The other steps' messages are sent by this worker after their run was committed, so a
run they do not find was hard-deleted since (a message delivered again after its
datastore or workspace went): there is nothing left to do, and they do nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import psycopg

from metamapper.inspectors import inspect_datastore
from metamapper.metastore import datastores, definitions, revision_log
from metamapper.metastore import revisioner as runs
from metamapper.revisioner.collector import SchemaDefinition, collect
from metamapper_urls import redact_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """A claimed start: the run and its start task, before the inspection."""

    run: runs.Run
    task_id: int


def claim_start(conn: psycopg.Connection, run_id: str, message_id: str) -> Started | None:
    """The run's start, claimed for ``message_id``; None if it is not waiting to start
    (finished, or started by another message). Raises
    :class:`~metamapper.metastore.revisioner.UnknownRun` if there is no such run."""
    task = runs.claim(conn, run_id, runs.start_path(run_id), message_id)
    if task is None:
        return None
    run = runs.get(conn, run_id)
    assert run is not None
    return Started(run, task.id)


def inspect_and_store(conn: psycopg.Connection, started: Started) -> list[int]:
    """Inspect the datastore and write a task per schema; the schema tasks to process.

    Raises what the inspection raises (:class:`~metamapper.inspectors.DatastoreUnavailable`
    is worth a retry); the start task then stays PENDING for the caller to retry or fail.
    """
    datastore = datastores.load(conn, started.run.datastore_id)
    schemas = collect(datastore.id, inspect_datastore(datastore.connection))
    pending = runs.add_schema_tasks(conn, started.run.id, [
        (runs.schema_path(datastore.id, started.run.id, schema.name), schema.to_json())
        for schema in schemas
    ])
    runs.finish_task(conn, started.task_id)
    return pending


def fail_start(conn: psycopg.Connection, started: Started, error: str) -> runs.Run | None:
    """Fail the start and so the run; the finished run (None if it was already)."""
    runs.finish_task(conn, started.task_id, redact_text(error))
    return runs.finish(conn, started.run.id)


def process(conn: psycopg.Connection, run_task_id: int, message_id: str) -> str | None:
    """Write one schema task's schema; the run's id if it was the last schema to finish."""
    found = runs.schema_task(conn, run_task_id)
    if found is None:
        logger.info("run task %s: gone (its run finished)", run_task_id)
        return None
    task, definition = found
    try:
        claimed = runs.claim(conn, task.run_id, task.path, message_id)
    except runs.UnknownRun:
        logger.info("run task %s: its run %s is gone (hard-deleted)", run_task_id, task.run_id)
        return None
    if claimed is None:
        logger.info("run task %s: already done or being done", run_task_id)
        return None
    run = runs.get(conn, task.run_id)
    assert run is not None
    owner = definitions.Owner(run.id, run.datastore_id, run.workspace_id)
    try:
        schema = SchemaDefinition.from_json(definition)
        with conn.transaction():
            revision_log.record_schema(conn, run.id, run.datastore_id, schema)
            definitions.write_schema(conn, owner, schema)
        error = None
    except Exception as exc:  # one bad schema must not fail the others
        logger.exception("run %s: %s could not be written", run.id, task.path)
        error = redact_text(f"{type(exc).__name__}: {exc}")
    return run.id if runs.finish_schema_task(conn, run.id, task.id, error) else None


def complete(conn: psycopg.Connection, run_id: str, message_id: str) -> runs.Run | None:
    """Soft-delete, correct renames and finish the run; None if another message did,
    or the run is gone."""
    try:
        task = runs.claim(conn, run_id, runs.complete_path(run_id), message_id)
    except runs.UnknownRun:
        logger.info("run %s: gone (hard-deleted), nothing to complete", run_id)
        return None
    if task is None:
        logger.info("run %s: already completed or being completed", run_id)
        return None
    run = runs.get(conn, run_id)
    assert run is not None
    try:
        with conn.transaction():
            revision_log.record_dropped_schemas(conn, run.id, run.datastore_id)
            definitions.complete(
                conn, definitions.Owner(run.id, run.datastore_id, run.workspace_id),
                since=run.started_at or run.created_at,
            )
        error = None
    except Exception as exc:
        logger.exception("run %s: could not be completed", run_id)
        error = redact_text(f"{type(exc).__name__}: {exc}")
    runs.finish_task(conn, task.id, error)
    return runs.finish(conn, run_id)


def run_now(conn: psycopg.Connection, datastore_id: str) -> runs.Run:
    """A new run of the datastore, every step in this process, no retry; the finished run.

    Refused (:class:`RunRefused`) while the datastore has an unfinished run or is disabled.
    """
    slug = datastores.load(conn, datastore_id).slug
    created = runs.create_due(conn, slug)
    if not created:
        raise RunRefused(f"datastore {slug!r} is disabled or has an unfinished run")
    [run_id] = created
    message_id = uuid.uuid4().hex
    started = claim_start(conn, run_id, message_id)
    assert started is not None
    try:
        pending = inspect_and_store(conn, started)
    except Exception as exc:
        fail_start(conn, started, f"{type(exc).__name__}: {exc}")
    else:
        for task_id in pending:
            process(conn, task_id, message_id)
        complete(conn, run_id, message_id)
    finished = runs.get(conn, run_id)
    assert finished is not None
    return finished


class RunRefused(Exception):
    """A run cannot be made now."""
