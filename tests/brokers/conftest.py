"""Fixtures for the probe tests: Celery publishers and workers of the real app."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from devenv.controlplane import free_port
from metamapper.celery import MetamapperCelery
from metamapper.defaults import SETTINGS
from tests.conftest import REPO
from tests.tasks.conftest import Process

BIN = Path(sys.executable).parent
#: The name the publishers' connections give themselves on a Redis broker (``CLIENT
#: LIST``), so that a test looking at the worker's connections can leave them out: a
#: control call's reply consumer tracks its reply queue as a worker tracks its queues.
PUBLISHER_CLIENT = "test-publisher"


@pytest.fixture
def publisher() -> Iterator[Callable[..., Celery]]:
    """``publisher(broker_url, **transport_options)``: the Metamapper app (its queues,
    routes and defaults) pointed at a broker, to send real task messages with."""
    apps: list[Celery] = []

    def make(broker_url: str, **transport_options: Any) -> Celery:
        app = MetamapperCelery("publisher", set_as_current=False)
        app.config_from_object({"broker_url": broker_url, "broker_transport_options": {
            **SETTINGS["broker_transport_options"], "client_name": PUBLISHER_CLIENT,
            **transport_options}})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """``worker(broker_url, queues, transport=None, **transport_options)``: ``celery --app
    metamapper worker`` with Metamapper's defaults (late acks, prefetch 1) and the
    ``tests.brokers.hold`` task; started and ready, stopped after the test."""
    started: list[Process] = []

    def start(broker_url: str, queues: str, concurrency: int = 2,
              transport: str | None = None, **transport_options: Any) -> Process:
        settings: dict[str, Any] = {"imports": ["tests.brokers.holdtasks"],
                                    "broker_transport_options": transport_options}
        if transport:   # the ``broker_transport`` setting: "redis" is kombu's own
            settings["broker_transport"] = transport
        env = {k: v for k, v in os.environ.items() if not k.startswith("METAMAPPER_")}
        env.update(PATH=os.pathsep.join([str(BIN), env.get("PATH", "")]),
                   PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1",
                   METAMAPPER_BROKER_URL=broker_url,
                   METAMAPPER_CELERY_SETTINGS=json.dumps(settings))
        name = f"probe{len(started)}"
        process = Process([str(BIN / "celery"), "--app", "metamapper", "worker", "-Q", queues,
                           "-c", str(concurrency), "--hostname", f"{name}@test", "-l", "info"],
                          env, tmp_path / f"{name}.log")
        started.append(process)
        process.wait_for_log(f"{name}@test ready.", timeout=60)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()
