"""Real ``celery --app metamapper worker`` processes on Redis, RabbitMQ and SQS (moto)."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from devenv.waiting import wait_until
from metamapper.metastore import heartbeats, open_metastore
from tests.tasks.conftest import MetamapperDB

BIN = Path(sys.executable).parent
Env = Callable[..., dict[str, str]]


def celery_call(env: dict[str, str], task: str) -> None:
    """Send a task the way an operator would, with Celery's own command line."""
    subprocess.run(
        [BIN / "celery", "--app", "metamapper", "call", task],
        env=env, check=True, capture_output=True, timeout=60,
    )


HEARTBEAT = "app.healthchecks.tasks.heartbeat"


def last_heartbeat() -> datetime | None:
    """The time in Metamapper's ``healthchecks_heartbeat`` (METAMAPPER_DB_* of this test)."""
    with open_metastore() as conn:
        return heartbeats.latest(conn)


def test_redis_worker_runs_tasks_and_shuts_down_warm(
    redis_url: str, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
    process_env: Env,
) -> None:
    env = process_env(
        METAMAPPER_BROKER_URL=redis_url,
        **metamapper_db.env,
        METAMAPPER_CELERY_SETTINGS=json.dumps(
            {"broker_transport_options": {"global_keyprefix": "mm-test:"}}
        ),
    )
    worker = start_worker(env, name="redis")
    celery_call(env, HEARTBEAT)
    assert wait_until(last_heartbeat)

    health = subprocess.run(
        [sys.executable, "-m", "metamapper", "health", "--timeout", "1"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert health.returncode == 0, health.stdout + health.stderr
    assert "1 live: redis@test" in health.stdout

    assert worker.stop(signal.SIGTERM) == 0
    assert "Warm shutdown" in worker.log


def _management(rabbitmq: Any, path: str) -> Any:
    request = urllib.request.Request(f"{rabbitmq.management_url}/api/{path}")
    token = base64.b64encode(f"{rabbitmq.user}:{rabbitmq.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_rabbitmq_worker_with_a_user_config_module(
    rabbitmq: Any, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
    process_env: Env, config_module: Env,
) -> None:
    env = process_env(
        **metamapper_db.env,
        **config_module("myceleryconfig", broker_url=rabbitmq.amqp_url),
    )
    start_worker(env, queues="default", name="rabbit")
    celery_call(env, HEARTBEAT)
    assert wait_until(last_heartbeat)

    # Revisioner tasks are routed to their own queue, which this worker does not consume.
    celery_call(env, "app.revisioner.tasks.v1.scheduler.create_runs")
    vhost = quote(rabbitmq.vhost, safe="")

    def revisioner_ready() -> int:
        return int(_management(rabbitmq, f"queues/{vhost}/revisioner").get("messages_ready", 0))

    assert wait_until(revisioner_ready) == 1
    names = {q["name"] for q in _management(rabbitmq, f"queues/{vhost}")}
    assert {"default", "revisioner"} <= names


def test_sqs_worker_against_moto(
    sqs_endpoint: str, metamapper_db: MetamapperDB, start_worker: Callable[..., Any],
    process_env: Env, config_module: Env,
) -> None:
    endpoint = urlsplit(sqs_endpoint)
    env = process_env(
        **metamapper_db.env,
        **config_module(
            "sqsceleryconfig",
            broker_url=f"sqs://{endpoint.netloc}",
            broker_transport_options={
                "region": "us-east-1",
                "is_secure": False,
                "queue_name_prefix": f"mm-{uuid.uuid4().hex[:8]}-",
                "visibility_timeout": 3600,
                "polling_interval": 0.3,
                "wait_time_seconds": 1,
            },
        ),
    )
    start_worker(env, name="sqs")
    celery_call(env, HEARTBEAT)
    assert wait_until(last_heartbeat)


