"""The Celery app's configuration: defaults, routes, the environment, user modules."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from celery.schedules import crontab

from metamapper.celery import app
from metamapper.defaults import (
    RUN_SPREAD_SECONDS,
    SETTINGS,
    TASK_TIME_LIMIT,
    VISIBILITY_TIMEOUT,
)
from metamapper.settings import from_environment, merge


def test_json_only() -> None:
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"
    assert list(app.conf.accept_content) == ["json"]


def test_safe_autoscaling_defaults() -> None:
    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit == TASK_TIME_LIMIT
    # Longer than the longest task plus the spread of delayed run starts.
    assert conf.broker_transport_options["visibility_timeout"] > (
        TASK_TIME_LIMIT + RUN_SPREAD_SECONDS)


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("app.revisioner.tasks.v1.core.start_run", "revisioner"),
        ("app.revisioner.tasks.v1.scheduler.queue_runs", "revisioner"),
        ("app.checks.tasks.core.execute_check", "checks"),
        ("app.definitions.tasks.usage.update_table_usage_metrics", "usage"),
        # Upstream routes only the usage tasks of app.definitions.tasks to usage.
        ("app.definitions.tasks.core.hard_delete_datastore", "default"),
        ("app.healthchecks.tasks.heartbeat", "default"),
    ],
)
def test_routes(task: str, queue: str) -> None:
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_queues() -> None:
    assert sorted(app.amqp.queues) == ["checks", "default", "revisioner", "usage"]


#: Upstream Metamapper 1.0's beat schedule (metamapper/celery.py): entry, task, when, queue.
UPSTREAM_BEAT = {
    "beat-scheduler-healthcheck": ("app.healthchecks.tasks.heartbeat", crontab(), "default"),
    "create-revisioner-runs": (
        "app.revisioner.tasks.v1.scheduler.create_runs", crontab(minute="0", hour="*/1"),
        "revisioner"),
    "queue-revisioner-runs": (
        "app.revisioner.tasks.v1.scheduler.queue_runs", crontab(minute="15,45"), "revisioner"),
    "detect-revisioner-run-timeouts": (
        "app.revisioner.tasks.v1.scheduler.detect_run_timeouts",
        crontab(minute="0", hour="*/1"), "revisioner"),
    "create-check-executions": (
        "app.checks.tasks.scheduler.create_executions", crontab(minute="*/1"), "checks"),
    "queue-table-usage-jobs": (
        "app.definitions.tasks.usage.queue_table_usage_jobs", crontab(minute="*/1"), "usage"),
    # Upstream's crontab(hour="*/12") fires every minute of two hours: twice a day was meant.
    "delete-90-day-table-usage": (
        "app.definitions.tasks.usage.delete_table_usage_older_than_90_days",
        crontab(minute=0, hour="*/12"), "usage"),
    "queue-domain-verification": (
        "app.sso.tasks.queue_domain_verifications", crontab(minute="*/20"), "default"),
    "deleted-domain-failures": (
        "app.sso.tasks.delete_failed_domains", crontab(minute=0, hour="*/4"), "default"),
}


def test_the_beat_schedule_is_upstreams_nine_entries_on_upstreams_queues() -> None:
    schedule = app.conf.beat_schedule
    assert {
        name: (entry["task"], entry["schedule"],
               app.amqp.router.route(entry.get("options", {}), entry["task"])["queue"].name)
        for name, entry in schedule.items()
    } == UPSTREAM_BEAT
    app.loader.import_default_modules()
    assert {entry["task"] for entry in schedule.values()} <= set(app.tasks)


@pytest.mark.parametrize(("environ", "broker", "backend"), [
    ({"METAMAPPER_CELERY_BROKER_URL": "redis://upstream/0",
      "METAMAPPER_CELERY_RESULT_BACKEND": "redis://upstream/1"},
     "redis://upstream/0", "redis://upstream/1"),
    # Metamapper's own names win over the aliases.
    ({"METAMAPPER_CELERY_BROKER_URL": "redis://upstream/0", "METAMAPPER_BROKER_URL": "redis://alias/0",
      "METAMAPPER_CELERY_RESULT_BACKEND": "redis://upstream/1",
      "METAMAPPER_RESULT_BACKEND": "redis://alias/1"},
     "redis://upstream/0", "redis://upstream/1"),
    # An empty name counts as unset: the alias is used.
    ({"METAMAPPER_CELERY_BROKER_URL": "", "METAMAPPER_BROKER_URL": "redis://alias/0"},
     "redis://alias/0", None),
])
def test_metamapper_variable_names_and_their_aliases(
        environ: dict[str, str], broker: str, backend: str | None) -> None:
    settings = from_environment(environ)
    assert settings["broker_url"] == broker
    assert settings.get("result_backend") == backend
    assert settings["task_ignore_result"] is (backend is None)


def test_environment_settings() -> None:
    settings = from_environment({
        "METAMAPPER_BROKER_URL": "amqp://u:p@rabbit/metamapper",
        "METAMAPPER_RESULT_BACKEND": "redis://r/1",
        "METAMAPPER_CELERY_SETTINGS": json.dumps({
            "worker_prefetch_multiplier": 4,
            "broker_transport_options": {"global_keyprefix": "mm:"},
            "beat_schedule": {
                "create-revisioner-runs": {"schedule": "*/5 * * * *"},
                "beat-scheduler-healthcheck": {"schedule": 10},
                "detect-revisioner-run-timeouts": None,
            },
        }),
    })
    assert settings["broker_url"] == "amqp://u:p@rabbit/metamapper"
    assert settings["result_backend"] == "redis://r/1"
    assert settings["worker_prefetch_multiplier"] == 4
    assert settings["broker_transport_options"] == {
        "visibility_timeout": VISIBILITY_TIMEOUT, "global_keyprefix": "mm:",
    }
    schedule = settings["beat_schedule"]
    assert schedule["create-revisioner-runs"] == {
        "task": "app.revisioner.tasks.v1.scheduler.create_runs", "schedule": crontab(minute="*/5"),
    }
    assert schedule["beat-scheduler-healthcheck"]["schedule"] == 10
    assert "detect-revisioner-run-timeouts" not in schedule
    assert SETTINGS["worker_prefetch_multiplier"] == 1  # the defaults are untouched


@pytest.mark.parametrize("removed", [None, "$remove"], ids=["null", "marker"])
def test_environment_settings_remove_a_default(removed: object) -> None:
    settings = from_environment({"METAMAPPER_CELERY_SETTINGS": json.dumps({
        "beat_schedule": {"beat-scheduler-healthcheck": removed},
        "task_time_limit": removed,
        "broker_transport_options": {"visibility_timeout": removed},
    })})
    assert "beat-scheduler-healthcheck" not in settings["beat_schedule"]
    assert "create-revisioner-runs" in settings["beat_schedule"]
    assert "task_time_limit" not in settings
    assert settings["broker_transport_options"] == {}


@pytest.mark.parametrize("raw", ["[1, 2]", "{not json"])
def test_bad_settings_json_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="METAMAPPER_CELERY_SETTINGS"):
        from_environment({"METAMAPPER_CELERY_SETTINGS": raw})


def test_merge() -> None:
    assert merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"c": None, "e": 4}, "d": None}) == {
        "a": {"b": 1, "e": 4},
    }


def _conf_in_subprocess(env: dict[str, str], *names: str) -> dict[str, object]:
    code = (
        "import json, sys; from metamapper.celery import app; "
        "print(json.dumps({n: app.conf[n] for n in sys.argv[1:]}, default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *names], env=env, check=True, capture_output=True, text=True,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def test_user_module_keeps_metamapper_defaults(
    config_module: Callable[..., dict[str, str]], process_env: Callable[..., dict[str, str]]
) -> None:
    env = process_env(**config_module(
        "myceleryconfig", broker_url="amqp://guest:guest@localhost:5672/metamapper"
    ))
    conf = _conf_in_subprocess(
        env, "broker_url", "task_acks_late", "task_default_queue", "worker_prefetch_multiplier"
    )
    assert conf == {
        "broker_url": "amqp://guest:guest@localhost:5672/metamapper",
        "task_acks_late": True,
        "task_default_queue": "default",
        "worker_prefetch_multiplier": 1,
    }


def test_the_default_module_is_upstreams(process_env: Callable[..., dict[str, str]]) -> None:
    code = ("import os; from metamapper.celery import app; "
            "print(os.environ['METAMAPPER_CELERY_CONFIG_MODULE'], app.conf.broker_url)")
    env = process_env(METAMAPPER_CELERY_BROKER_URL="redis://upstream/3")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.split() == ["metamapper.conf.celery", "redis://upstream/3"]


EXTENDS_UPSTREAMS = """\
from metamapper.conf.celery import *  # as Metamapper's docs suggest

broker_url = "amqp://guest:guest@rabbit:5672/metamapper"
worker_prefetch_multiplier = 4
"""


@pytest.mark.parametrize("base", ["metamapper.conf.celery", "metamapper.celeryconfig"])
def test_a_module_extending_the_default_module(
    base: str, tmp_path: Path, process_env: Callable[..., dict[str, str]],
) -> None:
    """A user's module written for Metamapper (or for this image's earlier default name)."""
    (tmp_path / "mine.py").write_text(EXTENDS_UPSTREAMS.replace("metamapper.conf.celery", base))
    env = process_env(METAMAPPER_CELERY_CONFIG_MODULE="mine", PYTHONPATH=str(tmp_path),
                      METAMAPPER_CELERY_RESULT_BACKEND="redis://results/1")
    conf = _conf_in_subprocess(env, "broker_url", "worker_prefetch_multiplier",
                               "result_backend", "task_acks_late", "task_default_queue")
    assert conf == {
        "broker_url": "amqp://guest:guest@rabbit:5672/metamapper",
        "worker_prefetch_multiplier": 4,
        "result_backend": "redis://results/1",
        "task_acks_late": True,
        "task_default_queue": "default",
    }


def test_default_module_reads_environment(process_env: Callable[..., dict[str, str]]) -> None:
    env = process_env(
        METAMAPPER_BROKER_URL="sqs://", METAMAPPER_CELERY_SETTINGS='{"task_time_limit": 5}'
    )
    conf = _conf_in_subprocess(env, "broker_url", "task_time_limit")
    assert conf == {"broker_url": "sqs://", "task_time_limit": 5}
