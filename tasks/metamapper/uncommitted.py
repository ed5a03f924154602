"""Messages that name a row the metastore does not show yet: retried briefly, then refused.

Metamapper's web app sends some messages from inside the database transaction that
writes the row they name: creating a datastore writes its first run and sends
``start_run(run.id)`` before that transaction commits. A worker quick enough takes the
message while the run is still invisible to it. :func:`retry_or_refuse` retries such a
message with a doubling delay, ``metamapper_unknown_id_retry_delay_seconds`` first, at
most ``metamapper_unknown_id_max_retries`` times (1 + 2 + 4 + 8 + 16 = 31 s by default:
the web app commits a few milliseconds after it sends, so a row still missing after
half a minute was rolled back, or the id was never one; and the wait stays far below
the hour after which ``detect_run_timeouts`` fails an unfinished run). Then the task
fails loudly, as a message this image cannot perform does
(:func:`metamapper.refusals.refuse`: one error line naming the id, a failed task in the
metrics, the message rejected without requeue).

Only a missing row is waited for. A row that is there but whose work is done (a run
finished, or started by another message) is a message delivered again, and its task
does nothing, unretried. Messages this worker sends itself name rows it committed
first, and a task whose missing row means its work was done (a hard delete delivered
again) does not use this module.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from celery import Task

from metamapper.celery import app

logger = logging.getLogger(__name__)


def _delay(retries: int) -> float:
    """Seconds before retry number ``retries + 1``."""
    return float(app.conf.metamapper_unknown_id_retry_delay_seconds) * 2 ** retries


def retry_or_refuse(task: Task, missing: LookupError) -> NoReturn:
    """Retry the running ``task``, whose message names a row that ``missing`` says is
    not in the metastore, or, once its retries are spent, fail it loudly."""
    retries = task.request.retries
    limit = int(app.conf.metamapper_unknown_id_max_retries)
    if retries < limit:
        delay = _delay(retries)
        logger.info("%s: %s (yet): retry %d of %d in %s s, its sender may not have"
                    " committed it", task.name, missing, retries + 1, limit, delay)
        # Celery's own limit (max_retries=None means the task's, 3 by default) is ours.
        raise task.retry(countdown=delay, max_retries=limit) from None
    waited = sum(_delay(n) for n in range(retries))
    # Imported here: metamapper.refusals imports every task module when it is imported.
    from metamapper.refusals import refuse

    refuse(task.name, f"{missing} after {retries} retries over {waited:g} s: the"
                      " transaction that was to write it was rolled back, or the id is wrong")
