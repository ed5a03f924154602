"""``app.healthchecks.tasks.*``: what the web app's ``/health`` endpoint relies on."""

from __future__ import annotations

from metamapper.celery import app


@app.task(name="app.healthchecks.tasks.add", ignore_result=False)
def add(x: int, y: int) -> int:
    """The web app's worker check: it sends ``add(4, 4)`` and waits for 8 on its result
    backend, so the result is stored even where results are otherwise ignored."""
    return x + y
