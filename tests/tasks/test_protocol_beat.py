"""The worker's beat schedule and routes are the shared tables (metamapper_beat), which
the operator reads too: the same entries, crontabs and queues as Celery itself has them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab

from metamapper.celery import app
from metamapper.settings import from_environment
from metamapper_beat import DEFAULT_QUEUE, SCHEDULE, Crontab, merge, route, task_routes


def test_the_worker_runs_the_shared_schedule() -> None:
    schedule = app.conf.beat_schedule
    assert list(schedule) == [entry.name for entry in SCHEDULE]
    for entry in SCHEDULE:
        assert schedule[entry.name]["task"] == entry.task
        assert schedule[entry.name]["schedule"] == crontab(**entry.schedule.fields())
        assert schedule[entry.name].get("options", {}).get("expires") == entry.expires


@pytest.mark.parametrize("text", ["* * * * *", "15,45 * * * *", "0 */12 * * *",
                                  "30 2 1-7 6,12 mon-fri"])
def test_a_crontab_string_means_what_it_means_to_celery(text: str) -> None:
    assert crontab(**Crontab.from_string(text).fields()) == crontab.from_string(text)


@pytest.mark.parametrize("settings", [
    {},
    {"task_routes": {"app.healthchecks.*": {"queue": "checks"}}},
    {"task_routes": {"app.checks.tasks.*": None, "app.definitions.tasks.usage.*": "checks"}},
    {"task_routes": {"app.revisioner.tasks.v1.scheduler.queue_runs": {"queue": "usage"}}},
])
def test_routes_under_settings_send_each_entry_where_celery_sends_it(
        settings: dict[str, Any]) -> None:
    conf = from_environment({"METAMAPPER_CELERY_SETTINGS": json.dumps(settings)})
    sender = Celery("routes", set_as_current=False)
    sender.conf.update(task_routes=conf["task_routes"], task_queues=conf["task_queues"],
                       task_default_queue=conf["task_default_queue"])
    routes = merge({"task_routes": task_routes()}, settings)["task_routes"]
    try:
        for entry in SCHEDULE:
            expected = sender.amqp.router.route({}, entry.task)["queue"].name
            assert route(routes, entry.task, DEFAULT_QUEUE) == expected
    finally:
        sender.close()
