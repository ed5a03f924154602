"""One execution of a check: run its SQL, evaluate its expectations, store the results.

Upstream's rules: a check with no expectation left is disabled and its execution
removed; an error (the datastore's, the SQL template's, an expectation that cannot be
evaluated) becomes the execution's ``error``, with no results stored and every
expectation counted as failed; otherwise one result per expectation, in their order.
An execution already finished (its message delivered again after a lost worker) is not
run twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jinja2
import psycopg

from metamapper.checks import store
from metamapper.checks.context import CheckContext
from metamapper.checks.expectations import ExpectationError, as_bigint, evaluate
from metamapper.checks.pass_values import expected_value
from metamapper.checks.query import QueryError, run_query
from metamapper.metastore.datastores import DatastoreError
from metamapper.metastore.fernet import UndecryptableSecret
from metamapper_urls import redact_text

log = logging.getLogger(__name__)

UNEXPECTED = "An unexpected error has occurred."

#: datastore id -> the URL its check's SQL runs on.
DatastoreUrl = Callable[[str], str]
Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class Report:
    """How an execution ended: ``ran`` False when there was nothing to run (disabled)."""

    ran: bool
    fails: int = 0
    error: str | None = None


def execute(conn: psycopg.Connection, check_id: str, epoch: int, *,
            datastore_url: DatastoreUrl, clock: Clock) -> Report:
    execution = store.execution(conn, check_id, epoch)
    if execution is None:
        raise LookupError(f"check {check_id!r} has no execution at epoch {epoch}")
    if execution.finished:
        log.info("Check %s/%s already finished; not run again", check_id, epoch)
        return Report(ran=True)
    store.mark_started(conn, execution.id, clock())
    expectations = store.live_expectations(conn, check_id)
    if not expectations:
        log.info("Check %s has no expectations: disabled", check_id)
        store.disable(conn, execution, clock())
        return Report(ran=False)

    log.info("Executing check %s/%s", check_id, epoch)
    results: list[store.Result] = []
    error: str | None = None
    try:
        sql = CheckContext(epoch, execution.interval).render(execution.sql_text)
        frame = run_query(datastore_url(execution.datastore_id), sql)
        for expectation in expectations:
            history = partial(store.observed_history, conn, expectation.id, now=clock())
            expected = expected_value(expectation.pass_value_class,
                                      expectation.pass_value_input, history)
            outcome = evaluate(expectation.handler_class, expectation.handler_input, frame,
                               expected)
            results.append(store.Result(
                expectation_id=expectation.id, passed=outcome.passed,
                expected_value=as_bigint(outcome.expected),
                observed_value=as_bigint(outcome.observed)))
    except (QueryError, ExpectationError, DatastoreError, UndecryptableSecret) as exc:
        error = str(exc)
    except jinja2.TemplateError as exc:
        error = f"The check's SQL template: {exc}"
    except Exception as exc:
        # Only the class and a redacted message: the text of an unknown error may quote
        # a connection URL.
        log.error("Check %s/%s: unexpected %s: %s", check_id, epoch, type(exc).__name__,
                  redact_text(str(exc)))
        error = UNEXPECTED
    if error is not None:
        results = []
    fails = len(expectations) - sum(result.passed for result in results)
    store.finish(conn, execution, results, tasks_count=len(expectations), fails_count=fails,
                 error=error, now=clock())
    return Report(ran=True, fails=fails, error=error)
