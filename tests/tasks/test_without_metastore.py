"""A fleet with no METAMAPPER_DB_* set: one warning at start, no task error every minute.

Beat leaves out the entries whose tasks need the metastore (both schedulers, whatever
configuration module gave the schedule), its heartbeat still ticks, the worker says once
what it lacks, and a metastore task sent anyway fails at once naming the variables.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery, signals

from devenv.podlogs import errors_in
from devenv.waiting import wait_until
from metamapper import metastore_env
from metamapper.beat import FileScheduler, RedisScheduler
from metamapper.celery import app
from metamapper.defaults import BEAT_SCHEDULE
from metamapper.metastore import MetastoreNotConfigured, MetastoreSettings
from metamapper_beat import METASTORE_ENV

BIN = Path(sys.executable).parent
HEARTBEAT_ENTRY = "beat-scheduler-healthcheck"
#: Upstream's entries that need the metastore: all but the heartbeat.
NEED_IT = sorted(set(BEAT_SCHEDULE) - {HEARTBEAT_ENTRY})


@pytest.fixture
def no_metastore(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in METASTORE_ENV:
        monkeypatch.delenv(name, raising=False)


def test_one_variable_names_a_metastore_and_none_is_no_metastore() -> None:
    with pytest.raises(MetastoreNotConfigured) as raised:
        MetastoreSettings.from_env({})
    assert all(name in str(raised.value) for name in METASTORE_ENV)
    # One set: the others take the web app's defaults, as the web app does.
    assert MetastoreSettings.from_env({"METAMAPPER_DB_HOST": "pg"}) == MetastoreSettings(
        host="pg", port=5432, name="metamapper", user="postgres", password="postgres")


def test_the_schedule_without_a_metastore_keeps_the_heartbeat_and_the_users_own() -> None:
    own = {"task": "shop.tasks.nightly", "schedule": 60}
    kept, left_out = metastore_env.split_schedule({**BEAT_SCHEDULE, "nightly": own})
    assert sorted(kept) == [HEARTBEAT_ENTRY, "nightly"]
    assert left_out == NEED_IT
    assert len(left_out) == 8


def _beat_app(**conf: Any) -> Celery:
    beat_app = Celery("beat-test", set_as_current=False)
    beat_app.conf.update(beat_schedule=dict(BEAT_SCHEDULE), **conf)
    return beat_app


@pytest.fixture
def redis_scheduler_app(redis_url: str) -> Iterator[Celery]:
    yield _beat_app(redbeat_redis_url=redis_url, redbeat_key_prefix="test:beat:")


# Celery's own entries (celery.backend_cleanup) are left aside.
def _scheduled_by_file(tmp_path: Path) -> set[str]:
    scheduler = FileScheduler(app=_beat_app(), schedule_filename=str(tmp_path / "schedule"))
    try:
        return {name for name in scheduler.schedule if not name.startswith("celery.")}
    finally:
        scheduler.close()


def _scheduled_in_redis(beat_app: Celery) -> set[str]:
    RedisScheduler(app=beat_app)
    client = redis.Redis.from_url(beat_app.conf.redbeat_redis_url, decode_responses=True)
    try:
        names = {str(key).removeprefix("test:beat:")
                 for key in client.zrange("test:beat::schedule", 0, -1)}
        return {name for name in names if not name.startswith("celery.")}
    finally:
        client.close()


@pytest.mark.usefixtures("no_metastore")
def test_beat_without_a_metastore_schedules_the_heartbeat_and_says_once_what_it_left_out(
    tmp_path: Path, redis_scheduler_app: Celery, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="metamapper.beat"):
        assert _scheduled_by_file(tmp_path) == {HEARTBEAT_ENTRY}
        assert _scheduled_in_redis(redis_scheduler_app) == {HEARTBEAT_ENTRY}
    warnings = [r.getMessage() for r in caplog.records if r.name == "metamapper.beat"]
    assert len(warnings) == 2  # one per beat started
    for message in warnings:
        assert "METAMAPPER_DB_HOST" in message and "METAMAPPER_DB_PASSWORD" in message
        assert all(name in message for name in NEED_IT)


def test_beat_with_a_metastore_schedules_all_nine_silently(
    tmp_path: Path, redis_scheduler_app: Celery, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METAMAPPER_DB_HOST", "metastore.example")
    with caplog.at_level(logging.WARNING, logger="metamapper.beat"):
        assert _scheduled_by_file(tmp_path) == set(BEAT_SCHEDULE)
        assert _scheduled_in_redis(redis_scheduler_app) == set(BEAT_SCHEDULE)
    assert not [r for r in caplog.records if r.name == "metamapper.beat"]


@pytest.mark.usefixtures("no_metastore")
@pytest.mark.parametrize("entry", sorted(BEAT_SCHEDULE))
def test_without_a_metastore_a_left_out_entrys_task_fails_at_once_and_the_heartbeat_ticks(
    entry: str,
) -> None:
    """What each entry's task does when it runs with no metastore: the ones beat leaves
    out fail at once (no retry) naming the variables; the heartbeat succeeds."""
    app.loader.import_default_modules()
    task = app.tasks[BEAT_SCHEDULE[entry]["task"]]
    retried: list[object] = []

    def count_retry(**kwargs: Any) -> None:
        retried.append(kwargs.get("reason"))

    signals.task_retry.connect(count_retry)
    try:
        result = task.apply(args=BEAT_SCHEDULE[entry].get("args", ()),
                            kwargs=BEAT_SCHEDULE[entry].get("kwargs", {}))
    finally:
        signals.task_retry.disconnect(count_retry)
    assert retried == []
    if entry == HEARTBEAT_ENTRY:
        assert result.successful(), result.traceback
        return
    assert isinstance(result.result, MetastoreNotConfigured), result.traceback
    assert "METAMAPPER_DB_HOST" in str(result.result)


@pytest.mark.usefixtures("no_metastore")
def test_a_worker_without_a_metastore_says_so_once_when_ready(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with caplog.at_level(logging.WARNING, logger="metamapper.celery"):
        signals.worker_ready.send(sender=None)
        monkeypatch.setenv("METAMAPPER_DB_NAME", "metamapper")
        signals.worker_ready.send(sender=None)
    (warning,) = [r for r in caplog.records if r.name == "metamapper.celery"]
    assert warning.getMessage() == metastore_env.WORKER_WARNING
    assert "METAMAPPER_DB_USER" in warning.getMessage()


def test_a_worker_and_beat_without_a_metastore_log_no_error_only_their_warnings(
    redis_url: str, tmp_path: Path, processes: Callable[..., Any],
    start_worker: Callable[..., Any], process_env: Callable[..., dict[str, str]],
) -> None:
    """Real processes, the heartbeat every second: the worker runs the ticks, and neither
    log holds an error record (devenv.podlogs, what the demo and the walkthrough check)."""
    env = process_env(METAMAPPER_CELERY_BROKER_URL=redis_url,
                      METAMAPPER_CELERY_SETTINGS=json.dumps(
                          {"beat_schedule": {HEARTBEAT_ENTRY: {"schedule": 1}}}))
    worker = start_worker(env, name="queues-only")
    beat = processes([str(BIN / "celery"), "--app", "metamapper", "beat", "-l", "info",
                      "--schedule", str(tmp_path / "schedule")], env, "beat")
    wait_until(lambda: worker.log.count(" succeeded in ") >= 2, timeout=30,
               what="two heartbeats run")
    assert errors_in(worker.log) == []
    assert errors_in(beat.log) == []
    assert worker.log.count("no metastore: none of METAMAPPER_DB_HOST") == 1
    assert beat.log.count("no metastore: none of METAMAPPER_DB_HOST") == 1
    assert "Sending due task create-revisioner-runs" not in beat.log
