"""Queue-depth autoscaling against real Redis, the real apiserver and controller-manager.

No worker consumes here (there is no kubelet), so a backlog stays until the test drains
it; the end-to-end tests run real workers.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from functools import partial
from typing import Any

import redis
from celery import Celery

from devenv import services
from devenv.waiting import wait_until
from tests.conftest import Cluster
from tests.helpers import OwnRedis, wait_for_event
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply, condition, fleet, get, items

# A short window, and the scale-down in one step to the window's maximum (no panic
# window): these tests are about the window and the drains (test_autoscale_steps.py
# shrinks by the spec's steps).
FAST = {"scaleDownStabilizationSeconds": 4, "scaleToZeroCooldownSeconds": 2,
        "scaleDownPercentile": 100, "scaleDownStepPercent": 100, "panicWindowSeconds": 0}


def redis_fleet(url: str, name: str = "mm", **pool: Any) -> dict[str, Any]:
    body = fleet(name, broker={"url": url}, scheduler={"enabled": False})
    body["spec"]["pools"] = [{
        "name": "default", "queues": ["default", "checks"], "concurrency": 2,
        "minReplicas": 1, "maxReplicas": 10, "autoscaling": dict(FAST), **pool}]
    return body


def push(url: str, count: int, queue: str = "default", priority: int | None = None) -> None:
    """Send real Celery task messages (nobody consumes them here) as one burst.

    They are sent to a staging queue of their own, then moved onto ``queue`` (each
    priority's list onto its twin) in one transaction: sent one by one, a loaded machine
    takes longer than a poll to send them, and the operator, measuring a burst half-sent,
    scales in two steps where the test expects one."""
    staging = f"{queue}.staging.{uuid.uuid4().hex}"
    app = Celery("producer", broker=url, set_as_current=False)
    try:
        for _ in range(count):
            app.send_task("metamapper.noop", queue=staging, priority=priority)
    finally:
        app.close()
    client = redis.Redis.from_url(url)
    with client.pipeline(transaction=True) as moves:
        for key in client.keys(f"{staging}*"):   # the queue, or its priorities' lists
            target = queue.encode() + key[len(staging):]
            for _ in range(client.llen(key)):
                moves.rpoplpush(key, target)     # oldest first: the order is kept
        moves.execute()
    if records := client.keys(f"_kombu.binding*.{staging}"):   # kombu's records of it
        client.delete(*records)
    client.close()


def replicas(cluster: Cluster, namespace: str, name: str = "mm-default") -> int:
    dep = get(cluster, namespace, "deployment", name)
    return int(dep["spec"]["replicas"]) if dep else -1


def pool_status(cluster: Cluster, namespace: str, name: str = "mm") -> dict[str, Any]:
    obj = get(cluster, namespace, "metamapper", name) or {}
    pools = (obj.get("status") or {}).get("pools") or [{}]
    return dict(pools[0])


def events(cluster: Cluster, namespace: str, reason: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          f"reason={reason}", "-o", "json").stdout
    return [e["message"] for e in json.loads(out)["items"]]


def expect_event(cluster: Cluster, namespace: str, reason: str, text: str = "") -> None:
    """Wait until an Event ``reason`` whose message contains ``text`` is posted."""
    wait_for_event(partial(events, cluster, namespace), reason, text)


def test_burst_scales_up_then_down_only_after_the_window(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    apply(cluster, namespace, redis_fleet(redis_url))
    wait_until(lambda: replicas(cluster, namespace) == 1, what="the pool at minReplicas")
    push(redis_url, 9)                     # 9 waiting / 2 per pod -> 5 pods
    wait_until(lambda: replicas(cluster, namespace) == 5, timeout=10, what="5 pods")
    status = wait_until(lambda: pool_status(cluster, namespace).get("backlog") == 9
                        and pool_status(cluster, namespace), what="backlog in status")
    assert status["desiredReplicas"] == 5
    assert status["backlogSource"].startswith("redis")
    assert "9" in status["lastScaleReason"]
    # The autoscaler may look while the burst is still being sent: the last step is to 5.
    expect_event(cluster, namespace, "ScaledUp", " -> 5 pods")

    redis.Redis.from_url(redis_url).delete("default")
    drained = time.monotonic()
    wait_until(lambda: pool_status(cluster, namespace).get("backlog") == 0, what="backlog 0")
    assert replicas(cluster, namespace) == 5  # still inside the 4 s window
    wait_until(lambda: replicas(cluster, namespace) == 1, timeout=15, what="back to 1")
    assert time.monotonic() - drained >= 3.5
    expect_event(cluster, namespace, "ScaledDown")


def worker_pods(cluster: Cluster, namespace: str) -> list[str]:
    """The pool's pods not being deleted (created by the real ReplicaSet controller; no
    kubelet here, so they stay Pending and their workers hold nothing)."""
    return sorted(pod["metadata"]["name"] for pod in items(cluster, namespace, "pods")
                  if not pod["metadata"].get("deletionTimestamp"))


def test_a_scale_down_removes_exactly_the_pods_it_drained(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    """The operator drains the first pods by name (all idle); the real ReplicaSet
    controller must remove those and no other, led by their deletion cost."""
    apply(cluster, namespace, redis_fleet(redis_url))
    push(redis_url, 5)                     # 3 pods
    pods = wait_until(lambda: len(worker_pods(cluster, namespace)) == 3
                      and worker_pods(cluster, namespace), what="3 pods")
    redis.Redis.from_url(redis_url).delete("default")
    wait_until(lambda: worker_pods(cluster, namespace) == pods[-1:], timeout=20,
               what=f"only {pods[-1]} left")
    expect_event(cluster, namespace, "ScaledDown",
                   f"removing drained {pods[0]}, {pods[1]}")
    assert len(events(cluster, namespace, "ScaledDown")) == 1


def test_priority_messages_and_every_queue_of_the_pool_count(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    apply(cluster, namespace, redis_fleet(redis_url))
    push(redis_url, 4, queue="checks", priority=6)   # kept under checks\x06\x166
    push(redis_url, 2, queue="default", priority=9)
    assert redis.Redis.from_url(redis_url).llen("checks\x06\x166") == 4
    wait_until(lambda: pool_status(cluster, namespace).get("backlog") == 6, what="backlog 6")
    wait_until(lambda: replicas(cluster, namespace) == 3, what="3 pods")


def test_scale_to_zero_and_back_on_activation(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    apply(cluster, namespace, redis_fleet(
        redis_url, minReplicas=0, autoscaling={**FAST, "activationBacklog": 2}))
    wait_until(lambda: replicas(cluster, namespace) == 0, what="the idle pool at zero")
    push(redis_url, 2)                     # not above activation
    wait_until(lambda: pool_status(cluster, namespace).get("backlog") == 2, what="backlog 2")
    assert replicas(cluster, namespace) == 0
    push(redis_url, 1)
    wait_until(lambda: replicas(cluster, namespace) == 2, what="woken: ceil(3 / 2) pods")


def test_broker_down_holds_replicas_reports_and_recovers(
        cluster: Cluster, namespace: str, operator: OperatorProcess, own_redis: OwnRedis) -> None:
    apply(cluster, namespace, redis_fleet(own_redis.url))
    push(own_redis.url, 7)
    wait_until(lambda: replicas(cluster, namespace) == 4, what="4 pods")
    own_redis.stop()

    def unreachable() -> dict[str, Any]:
        return condition(get(cluster, namespace, "metamapper", "mm"), "BrokerUnreachable")

    cond = wait_until(lambda: unreachable().get("status") == "True" and unreachable(),
                      what="BrokerUnreachable")
    assert f"{services.HOST}:{own_redis.port}" in cond["message"]
    degraded = condition(get(cluster, namespace, "metamapper", "mm"), "Degraded")
    assert degraded["reason"] == "BrokerUnreachable"
    expect_event(cluster, namespace, "BrokerUnreachable")
    time.sleep(FAST["scaleDownStabilizationSeconds"] + 2)  # longer than the window
    assert replicas(cluster, namespace) == 4                # held, not scaled down

    own_redis.start()  # back, and empty
    wait_until(lambda: unreachable().get("status") == "False", what="recovery")
    expect_event(cluster, namespace, "BrokerReachable")
    wait_until(lambda: replicas(cluster, namespace) == 1, timeout=20,
               what="scale-down once measured again")


def _metric(operator: OperatorProcess, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.ports['metrics']}/metrics") as rsp:
        text = rsp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_objects_on_one_redis_cost_one_measurement_per_cycle(
        cluster: Cluster, namespace: str, operator: OperatorProcess, own_redis: OwnRedis) -> None:
    """Counted at a Redis server of the test's own: every measurement is one MULTI/EXEC
    transaction (the LLENs and the scripts in one pipelined round trip), so EXEC calls =
    measurements."""
    apply(cluster, namespace, redis_fleet(own_redis.url, "one"),
          redis_fleet(own_redis.url, "two"))
    wait_until(lambda: pool_status(cluster, namespace, "one").get("backlog") == 0
               and pool_status(cluster, namespace, "two").get("backlog") == 0,
               what="both objects measured")
    client = redis.Redis.from_url(own_redis.url)

    def exec_calls() -> int:
        return int(client.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))

    cycles = "metamapper_autoscale_cycle_seconds_count"
    before_calls, before_cycles = exec_calls(), _metric(operator, cycles)
    time.sleep(5)
    calls, cycled = exec_calls() - before_calls, _metric(operator, cycles) - before_cycles
    assert cycled >= 3
    assert abs(calls - cycled) <= 1, (calls, cycled)  # not 2 per cycle: one per broker


def test_a_broken_broker_url_affects_only_its_own_object(
        cluster: Cluster, namespace: str, operator: OperatorProcess, redis_url: str) -> None:
    """A port redis-py cannot read is refused as InvalidSpec; an option it refuses on
    connect (TypeError) is that broker's error. The good object next to them scales."""
    apply(cluster, namespace, redis_fleet("redis://127.0.0.1:notaport/0", "badport"),
          redis_fleet(f"{redis_url}?no_such_option=1", "badoption"),
          redis_fleet(redis_url, "good"))
    push(redis_url, 9)
    wait_until(lambda: replicas(cluster, namespace, "good-default") == 5, what="good: 5 pods")

    def conditions(name: str) -> dict[str, dict[str, Any]]:
        obj = get(cluster, namespace, "metamapper", name)
        return {kind: condition(obj, kind) for kind in ("Ready", "InvalidSpec",
                                                        "BrokerUnreachable")}

    bad_port = wait_until(lambda: conditions("badport")["InvalidSpec"].get("status") == "True"
                          and conditions("badport"), what="badport: InvalidSpec")
    assert "port" in bad_port["InvalidSpec"]["message"]
    assert bad_port["Ready"]["status"] == "False"
    bad_option = wait_until(
        lambda: conditions("badoption")["BrokerUnreachable"].get("status") == "True"
        and conditions("badoption"), what="badoption: BrokerUnreachable")
    assert "TypeError" in bad_option["BrokerUnreachable"]["message"]
    assert bad_option["Ready"]["status"] == "False"
    assert bad_option["Ready"]["reason"] == "BrokerUnreachable"
    assert conditions("good")["BrokerUnreachable"]["status"] == "False"
