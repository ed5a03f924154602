"""The getting-started walkthrough on the node: ``examples/metamapper.yaml`` as it stands
(the worker image, its two pools and two scheduler pods), its broker Secret, and Metamapper's
metastore made as the walkthrough makes it (``devenv.metastore``: a database on the local
PostgreSQL, ``metamapper metastore init``, the Secret the example's envFrom names).

Beat fires (its heartbeat reaches the metastore twice, and with it the every-minute entries
for checks and usage run), and then the log of every container of every pod in the
namespace holds no task error (``devenv.podlogs``: ``raised unexpected``, a traceback, a
record at ERROR or CRITICAL).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest
import redis

from devenv import metastore, services
from devenv.podlogs import PodLogs
from devenv.stack import Stack
from devenv.waiting import wait_until
from tests.e2e.conftest import LABEL_INSTANCE, NAMESPACE

FLEET = "metamapper"                       # the example's name
BROKER_SECRET = "metamapper-broker"        # the example's broker.urlSecretRef
QUEUES = ("default", "checks", "usage", "revisioner")


@pytest.fixture
def walkthrough_metastore() -> Iterator[metastore.Metastore]:
    services.ensure("postgres")
    name = f"e2e_walkthrough_{uuid.uuid4().hex[:8]}"
    yield metastore.create(name)
    metastore.drop_database(name)


def heartbeat(made: metastore.Metastore) -> datetime | None:
    """The time of the metastore's heartbeat, if beat's first has been run."""
    settings = made.settings
    with psycopg.connect(host=settings.host, port=settings.port, dbname=settings.name,
                         user=settings.user, password=settings.password) as conn:
        row = conn.execute("SELECT max(ts) FROM healthchecks_heartbeat").fetchone()
    return row[0] if row else None


def heartbeat_after(made: metastore.Metastore, moment: datetime) -> bool:
    at = heartbeat(made)
    return at is not None and at > moment


def queues_empty(broker: str) -> bool:
    client = redis.Redis.from_url(broker)
    try:
        return sum(int(client.llen(q)) for q in QUEUES) + int(client.hlen("unacked")) == 0
    finally:
        client.close()


def test_the_walkthroughs_fleet_runs_beat_with_no_task_error_in_any_pods_log(
    stack: Stack, redis_url: str, walkthrough_metastore: metastore.Metastore,
) -> None:
    assert stack.images is not None
    example = metastore.EXAMPLE.read_text()
    manifest = example.replace("image: metamapper-worker:0.1.0",
                               f"image: {stack.images.worker}")
    assert manifest != example, "the example names another image than the walkthrough's sed"
    logs = PodLogs(stack.kubectl, NAMESPACE)
    stack.kubectl("create", "secret", "generic", BROKER_SECRET, "-n", NAMESPACE,
                  f"--from-literal=url={redis_url}")
    try:
        stack.kubectl("apply", "-n", NAMESPACE, "-f", "-",
                      input=walkthrough_metastore.secret())
        stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=manifest)

        # Beat sends its heartbeat at the start of each minute; a worker writes it.
        first = wait_until(lambda: heartbeat(walkthrough_metastore), timeout=240,
                           interval=2, what="beat's first heartbeat in the metastore")
        assert first is not None
        wait_until(lambda: heartbeat_after(walkthrough_metastore, first), timeout=90,
                   interval=2, what="beat's second heartbeat")
        wait_until(lambda: queues_empty(redis_url), timeout=60,
                   what="every message of beat's entries run")
        logs.read()
    finally:
        stack.kubectl("delete", "-n", NAMESPACE, "metamapper", FLEET, "--ignore-not-found",
                      "--wait=true")
        wait_until(lambda: not stack.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", f"{LABEL_INSTANCE}={FLEET}", "-o", "name"
        ).stdout.strip(), timeout=120, what="the walkthrough's pods to be gone")
        stack.kubectl("delete", "-n", NAMESPACE, "secret", BROKER_SECRET,
                      metastore.secret_name(), "--ignore-not-found")

    pods = {pod for pod, _ in logs.logs}
    assert any(p.startswith(f"{FLEET}-default-") for p in pods), pods
    assert sum(p.startswith(f"{FLEET}-scheduler-") for p in pods) == 2, pods
    # The pods had the metastore: none said it was missing.
    assert not [key for key, text in logs.logs.items() if "no metastore:" in text]
    errors = logs.errors()
    assert not errors, "task errors in the pods' logs:\n" + "\n".join(map(str, errors))
