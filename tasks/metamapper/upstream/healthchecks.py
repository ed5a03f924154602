"""``app.healthchecks.tasks.*``: what the web app's ``/health`` endpoint relies on."""

from __future__ import annotations

import os

from celery import Task

from metamapper import metastore_env, metrics
from metamapper.celery import app
from metamapper.metastore import heartbeats, open_metastore


@app.task(name="app.healthchecks.tasks.heartbeat", bind=True)
def heartbeat(self: Task) -> None:
    """Beat's tick, every minute: replace the one row of ``healthchecks_heartbeat``, whose
    age the web app's ``/health`` (and ``metamapper health``) judge the scheduler by.

    The tick is counted first: beat did send it, whether or not the metastore answers.
    Without a metastore (no METAMAPPER_DB_*, said once at start-up) the tick is all.
    """
    metrics.record_beat_tick(str(self.request.hostname or ""))
    if not metastore_env.configured(os.environ):
        return
    with open_metastore() as conn:
        heartbeats.beat(conn)


@app.task(name="app.healthchecks.tasks.add", ignore_result=False)
def add(x: int, y: int) -> int:
    """The web app's worker check: it sends ``add(4, 4)`` and waits for 8 on its result
    backend, so the result is stored even where results are otherwise ignored."""
    return x + y
