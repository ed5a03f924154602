"""``app.definitions.tasks.usage.*``: Metamapper's usage tasks, on the ``usage`` queue.

- ``queue_table_usage_jobs`` (beat, every minute) sends ``get_query_history_results``
  for each enabled PostgreSQL or Snowflake datastore not collected for four hours.
- ``get_query_history_results`` collects a PostgreSQL datastore's usage from
  ``pg_stat_statements`` and scores its tables at once, in one transaction (Metamapper
  sends one ``set_usage_from_query_text`` per query and scores half an hour later).
  A Snowflake datastore's history cannot be read here: the message fails loudly.
- ``set_usage_from_query_text`` counts one query of a day, once (a message Metamapper's
  own worker sends for Snowflake queries); ``update_table_usage_metrics`` scores a
  datastore's tables; ``delete_table_usage_older_than_90_days`` (beat) purges.

The steps are :mod:`metamapper.usage.collect`'s; these are the messages' wiring.
"""

from __future__ import annotations

import logging
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any, NoReturn

from metamapper.celery import app
from metamapper.metastore import datastores
from metamapper.metastore.connection import open_metastore
from metamapper.usage import collect, store
from metamapper.usage.counting import QueryRecord
from metamapper.usage.statements import StatisticsUnavailable

logger = logging.getLogger(__name__)

PREFIX = "app.definitions.tasks.usage."

#: The engines whose datastores are queued for collection (only PostgreSQL's history
#: is read here; a Snowflake datastore's message fails loudly, as it must not vanish).
QUEUED_ENGINES = ("postgresql", "snowflake")

_SNOWFLAKE = ("Snowflake's query history cannot be read here (this image has no Snowflake"
              " connector and no Snowflake account is reachable)")


@app.task(name=PREFIX + "queue_table_usage_jobs")
def queue_table_usage_jobs(countdown_in_minutes: int = 0) -> None:
    """Send a collection for every datastore due, each after a random delay of up to
    ``countdown_in_minutes``."""
    now = datetime.now(UTC)
    end_date = (now - store.SYNC_INTERVAL).date().isoformat()
    with open_metastore() as conn, conn.transaction():
        due = store.take_due(conn, QUEUED_ENGINES)
        for datastore in due:
            start_date = collect.sync_start(datastore.latest_usage, now.date()).isoformat()
            get_query_history_results.apply_async(
                args=[datastore.id, start_date, end_date],
                countdown=random.randint(0, 60 * countdown_in_minutes),
            )
    logger.info("queued the usage collection of %d datastore(s)", len(due))


@app.task(name=PREFIX + "get_query_history_results", bind=True)
def get_query_history_results(self: Any, datastore_id: str, start_date: str,
                              end_date: str) -> None:
    """Collect the datastore's usage since its last collection and score its tables.

    ``start_date`` and ``end_date`` bound a history of dated queries (Snowflake's);
    pg_stat_statements has no dates: what ran since the last collection counts today.
    A database without pg_stat_statements has no usage to collect: a warning says what
    it needs, and the task succeeds (the statistics are an option a DBA turns on).
    """
    with open_metastore() as conn:
        datastore = datastores.load(conn, datastore_id)
        engine = datastore.connection.engine
        if engine != "postgresql":
            _refuse(self.name, _SNOWFLAKE if engine == "snowflake"
                    else f"a {engine} datastore has no query history this image reads")
        try:
            done = collect.collect_postgresql(conn, datastore_id, datastore.connection,
                                              collect.today())
        except StatisticsUnavailable as absent:
            logger.warning("usage of datastore %s is not collected: %s", datastore.slug, absent)
            return
    logger.info("usage of datastore %s: %d statement(s) ran since the last collection,"
                " %d usage row(s) counted, %d table(s) scored", datastore.slug,
                done.statements, done.usage_rows, done.tables_scored)
    if done.hidden:
        logger.warning("usage of datastore %s: the text of %d statement(s) is hidden from"
                       " its user %s, who needs pg_read_all_stats to see other users' queries;"
                       " they count once it may", datastore.slug, done.hidden,
                       datastore.connection.username)


@app.task(name=PREFIX + "set_usage_from_query_text", bind=True)
def set_usage_from_query_text(self: Any, datastore_id: str, execution_date: str,
                              db_name: str, db_user: str, db_schema: str, query_text: str,
                              query_count: int) -> None:
    """Count one query of one day into the datastore's usage, unless it already was."""
    record = QueryRecord(date.fromisoformat(execution_date), db_name, db_user, db_schema,
                         query_text, int(query_count))
    with open_metastore() as conn:
        engine = store.engine_of(conn, datastore_id)
        if engine is None:
            raise datastores.DatastoreError(f"no datastore with id {datastore_id!r}")
        if engine not in collect.DIALECTS:
            _refuse(self.name, f"queries of a {engine} datastore cannot be read here")
        with conn.transaction():
            if store.claim(conn, record.idempotency_id(datastore_id)):
                collect.record_usage(conn, datastore_id, [record], collect.DIALECTS[engine])


@app.task(name=PREFIX + "update_table_usage_metrics")
def update_table_usage_metrics(datastore_id: str) -> None:
    with open_metastore() as conn, conn.transaction():
        scored = collect.update_metrics(conn, datastore_id, collect.today())
    logger.info("usage scores of %d table(s) of datastore %s updated", scored, datastore_id)


@app.task(name=PREFIX + "delete_table_usage_older_than_90_days")
def delete_table_usage_older_than_90_days(*args: Any, **kwargs: Any) -> None:
    with open_metastore() as conn:
        purged = store.purge_old_usage(conn)
    logger.info("deleted %d usage row(s) and %d counted-query mark(s) older than %d days",
                purged.usage_rows, purged.counted_marks, store.RETENTION // timedelta(days=1))


def _refuse(name: str, reason: str) -> NoReturn:
    # Imported here: metamapper.refusals imports this module to register it.
    from metamapper.refusals import refuse

    refuse(name, reason)
