"""What else sizes a pool, on the real apiserver with real Redis: a pause annotation
(optionally pinning replicas) and schedule windows raising the minimum."""

from __future__ import annotations

import datetime
import json
import time

import redis

from metamapper_operator.model import MAX_REPLICAS
from tests.conftest import Cluster
from tests.helpers import wait_until
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply, condition, get
from tests.operator.test_autoscale import pool_status, push, redis_fleet, replicas

PAUSED = "autoscaling.metamapper.io/paused"
PAUSED_REPLICAS = "autoscaling.metamapper.io/paused-replicas"


def annotate(cluster: Cluster, namespace: str, *pairs: str) -> None:
    cluster.kubectl("annotate", "--overwrite", "-n", namespace, "metamapper", "mm", *pairs)


def paused_column(cluster: Cluster, namespace: str) -> str:
    """The PAUSED column of ``kubectl get metamapper``."""
    header, row = cluster.kubectl("get", "-n", namespace, "metamapper", "mm").stdout.splitlines()
    start = header.index("PAUSED")         # cells may be empty (no backlog while paused)
    return row[start:].split()[0]


def test_pause_holds_the_size_pins_replicas_and_reports_bad_values(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    apply(cluster, namespace, redis_fleet(redis_url))
    push(redis_url, 9)                                     # 9 / 2 per pod -> 5 pods
    wait_until(lambda: replicas(cluster, namespace) == 5, what="5 pods")
    wait_until(lambda: paused_column(cluster, namespace) == "False", what="PAUSED False")

    annotate(cluster, namespace, f"{PAUSED}=true")
    wait_until(lambda: condition(get(cluster, namespace, "metamapper", "mm"), "Paused")
               .get("reason") == "Annotation", what="Paused condition")
    assert paused_column(cluster, namespace) == "True"
    redis.Redis.from_url(redis_url).delete("default")      # idle: would shrink after 4 s
    time.sleep(8)
    assert replicas(cluster, namespace) == 5
    assert "backlog" not in pool_status(cluster, namespace)  # not measured while paused

    annotate(cluster, namespace, f"{PAUSED_REPLICAS}=2")
    wait_until(lambda: replicas(cluster, namespace) == 2, what="pinned at 2")
    # The operator scales, then publishes the status that says why.
    paused = wait_until(lambda: (c := condition(get(cluster, namespace, "metamapper", "mm"),
                                                "Paused")).get("reason") == "PinnedReplicas"
                        and c, what="the Paused condition of pinned replicas")
    assert "held at 2 pods" in paused["message"]
    push(redis_url, 20)                                    # would be 10 pods
    time.sleep(4)
    assert replicas(cluster, namespace) == 2

    annotate(cluster, namespace, f"{PAUSED_REPLICAS}=two")
    ready = wait_until(lambda: (c := condition(get(cluster, namespace, "metamapper", "mm"),
                                               "Ready")).get("reason") == "InvalidSpec" and c,
                       what="InvalidSpec for the bad annotation")
    assert ready["message"] == (f"metadata.annotations[{PAUSED_REPLICAS}]: must be a whole "
                                f"number of pods from 0 to {MAX_REPLICAS}, not 'two'")
    assert replicas(cluster, namespace) == 2               # nothing touched meanwhile

    cluster.kubectl("annotate", "-n", namespace, "metamapper", "mm", f"{PAUSED}-",
                    f"{PAUSED_REPLICAS}-")
    wait_until(lambda: replicas(cluster, namespace) == 10, what="autoscaling again: 10 pods")
    # The status that says so is written after the scale.
    wait_until(lambda: condition(get(cluster, namespace, "metamapper", "mm"), "Paused")
               .get("status") == "False", what="the Paused condition False again")


def test_a_schedule_window_raises_the_minimum_while_open(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    start = now.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    if (start - now).total_seconds() < 15:      # time to see the pool before the window
        start += datetime.timedelta(minutes=1)
    # The same minute read in Tokyo's clock (UTC+9, no daylight saving): the time zone
    # is honoured.
    local = start.astimezone(datetime.timezone(datetime.timedelta(hours=9)))
    schedule = {"name": "warm-up", "cron": f"{local.minute} {local.hour} * * *",
                "durationSeconds": 20, "minReplicas": 3, "timeZone": "Asia/Tokyo"}
    body = redis_fleet(redis_url)
    body["spec"]["pools"][0]["autoscaling"]["schedules"] = [schedule]
    apply(cluster, namespace, body)
    wait_until(lambda: pool_status(cluster, namespace).get("backlog") == 0, what="measured")
    assert replicas(cluster, namespace) == 1
    assert "activeSchedule" not in pool_status(cluster, namespace)

    wait_until(lambda: replicas(cluster, namespace) == 3,
               timeout=(start - datetime.datetime.now(datetime.UTC)).total_seconds() + 10,
               what="3 pods while the window is open")
    opened = datetime.datetime.now(datetime.UTC)
    assert opened >= start
    status = wait_until(lambda: (s := pool_status(cluster, namespace)).get("activeSchedule")
                        and s, what="the open window in the status")   # written after the scale
    assert status["activeSchedule"] == {
        "name": "warm-up", "minReplicas": 3,
        "until": (start + datetime.timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    # After the window the minimum is 1 again; the 4 s stabilization window applies.
    wait_until(lambda: replicas(cluster, namespace) == 1, timeout=40, what="back to 1")
    assert datetime.datetime.now(datetime.UTC) >= start + datetime.timedelta(seconds=20)
    wait_until(lambda: "activeSchedule" not in pool_status(cluster, namespace),
               what="the closed window gone from the status")


def test_bad_schedules_are_refused_or_reported_naming_the_field(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    body = redis_fleet(redis_url)
    body["spec"]["pools"][0]["autoscaling"]["schedules"] = [
        {"name": "w", "cron": "0 0 * * * *", "durationSeconds": 60, "minReplicas": 2}]
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False,
                              input=json.dumps(body))
    assert refused.returncode != 0
    assert "cron must have exactly five fields" in refused.stderr

    body["spec"]["pools"][0]["autoscaling"]["schedules"] = [
        {"name": "w", "cron": "0 25 * * *", "durationSeconds": 60, "minReplicas": 2,
         "timeZone": "Europe/Berlin"}]
    apply(cluster, namespace, body)
    ready = wait_until(lambda: (c := condition(get(cluster, namespace, "metamapper", "mm"),
                                               "Ready")).get("reason") == "InvalidSpec" and c,
                       what="InvalidSpec for the hour 25")
    assert ready["message"].startswith("spec.pools[0].autoscaling.schedules[0].cron: '0 25 * * *'")

    body["spec"]["pools"][0]["autoscaling"]["schedules"][0].update(
        cron="0 1 * * *", timeZone="Europe/Atlantis")
    apply(cluster, namespace, body)
    wait_until(lambda: condition(get(cluster, namespace, "metamapper", "mm"), "Ready")
               .get("message") == "spec.pools[0].autoscaling.schedules[0].timeZone: unknown "
               "time zone 'Europe/Atlantis'; use an IANA name such as Europe/Berlin",
               what="InvalidSpec for the time zone")
