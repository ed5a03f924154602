"""Containment on the real node: objects of every failure class applied at once beside a
valid fleet, in the same namespace, on the same Redis. The valid fleet keeps scaling,
every bad object is refused by the apiserver or reports Ready False with its reason, no
secret appears anywhere, and the operator stays healthy."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis

from devenv.stack import OPERATOR_NAMESPACE, Stack
from devenv.waiting import wait_until
from metamapper_operator import crd
from tests.e2e.conftest import NAMESPACE, Fleets, ReplicasWatch

Json = dict[str, Any]
# The password of a Secret's broker URL and of a URL the apiserver must refuse.
PASSWORD = "c0ntained-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Bad:
    """A bad object: its name, how it differs from a valid one, and what must follow:
    ``refused`` (text of the apiserver's refusal) or ``reason`` (of Ready False) with a
    text its message names."""

    name: str
    spec: Json
    refused: str = ""
    reason: str = ""
    names: str = ""
    annotations: Json | None = None


def pool(**fields: Any) -> Json:
    """A pool of a bad object: on a queue of its own, so that its workers (which know
    nothing of the test's tasks) never take the valid fleet's messages."""
    return {"name": "default", "queues": ["elsewhere"], "concurrency": 1, "minReplicas": 0,
            "maxReplicas": 2, **fields}


def cases(image: str, server: str, blocked: str) -> list[Bad]:
    unreachable = f"{server}/15"   # a database nobody else uses
    flower = {"enabled": True, "basicAuthSecretRef": {"name": "flower-auth"}}
    return [
        Bad("cron-never", {"pools": [pool(autoscaling={"schedules": [
            {"name": "feb30", "cron": "0 0 30 2 *", "durationSeconds": 60,
             "minReplicas": 1}]})]}, reason="InvalidSpec", names="feb30"),
        Bad("queue-wrongtype", {"pools": [pool(queues=[blocked])]},
            reason="", names=blocked),
        Bad("pause-digit", {"pools": [pool()]},
            annotations={"autoscaling.metamapper.io/paused-replicas": "\u00b2"},
            reason="InvalidSpec", names="paused-replicas"),
        Bad("options-not-a-map", {"pools": [pool()], "celery": {"settings": {
            "broker_transport_options": "yes"}}},
            reason="InvalidSpec", names="broker_transport_options"),
        Bad("query-password", {"pools": [pool()],
                               "broker": {"url": f"{unreachable}?password={PASSWORD}"}},
            refused="password"),
        Bad("flower-pool", {"pools": [pool(name="flower")], "flower": flower},
            refused="flower"),
        # Flower's Service takes the object's name, which must then be a DNS-1035 label.
        Bad("9-leading-digit", {"pools": [pool()], "flower": flower}, refused="metadata.name"),
        Bad("dotted.name", {"pools": [pool()], "flower": flower}, refused="metadata.name"),
        Bad("image-missing", {"pools": [pool(minReplicas=1)],
                              "image": image.rsplit(":", 1)[0] + ":not-built"},
            reason="", names="image"),
        Bad("secret-password", {"pools": [pool()], "broker": {
            "urlSecretRef": {"name": "containment-broker"}}},
            reason="BrokerUnreachable", names=""),
        Bad("optional-missing", {"pools": [pool(minReplicas=1)], "celery": {
            "resultBackendSecretRef": {"name": "no-such-secret"}}},
            reason="SecretMissing", names="no-such-secret"),
    ]


def body(name: str, image: str, broker: str, spec: Json, annotations: Json | None) -> Json:
    return {"apiVersion": crd.API_VERSION, "kind": crd.KIND,
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {"image": image, "broker": {"url": broker},
                     "scheduler": {"enabled": False}, **spec}}


def everything_shown(stack: Stack) -> str:
    """Whatever the cluster and the operator show: statuses, events, ConfigMaps, pods'
    specs, the operator's log."""
    shown = [stack.kubectl("get", "-n", NAMESPACE, what, "-o", "json").stdout
             for what in ("metamappers", "events", "configmaps", "pods", "deployments")]
    shown.append(stack.kubectl("get", "-n", OPERATOR_NAMESPACE, "events", "-o",
                               "json").stdout)
    shown.append(stack.operator_logs())
    return "\n".join(shown)


def ready_of(stack: Stack, name: str) -> Json:
    out = stack.kubectl("get", "-n", NAMESPACE, "metamapper", name, "-o", "json").stdout
    conditions = (json.loads(out).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def test_bad_objects_stay_contained_beside_a_valid_fleet(fleets: Fleets,
                                                           redis_url: str) -> None:
    canary = fleets("canary", redis_url)
    stack = canary.stack
    assert stack.images is not None
    image = stack.images.workload
    parts = urlsplit(redis_url)
    server = f"{parts.scheme}://{parts.netloc}"
    blocked = "blocked-" + uuid.uuid4().hex[:6]
    client = redis.Redis.from_url(redis_url)
    client.set(blocked, "a string key, not a list")    # a queue name of another type
    client.close()
    # A broker URL with a password, at an address where nothing listens (the operator
    # pod's own loopback): the broker is unreachable and its error must not show it.
    stack.kubectl("create", "secret", "generic", "-n", NAMESPACE, "containment-broker",
                  f"--from-literal=url=redis://:{PASSWORD}@127.0.0.1:1/14")
    canary.apply({"concurrency": 1, "maxReplicas": 3})
    canary.wait_for_workers(1)
    restarts = stack.operator_pod()["status"]["containerStatuses"][0]["restartCount"]

    accepted: list[Bad] = []
    try:
        for bad in cases(image, server, blocked):
            done = stack.kubectl("apply", "-n", NAMESPACE, "-f", "-", check=False,
                                 input=json.dumps(body(bad.name, image, redis_url, bad.spec,
                                                       bad.annotations)))
            if bad.refused:
                assert done.returncode != 0, f"{bad.name} was accepted"
                # (The apiserver's refusal quotes the value back to whoever sent it;
                # nothing of it is stored.)
                assert bad.refused in done.stderr, (bad.name, done.stderr)
            else:
                assert done.returncode == 0, (bad.name, done.stderr)
                accepted.append(bad)

        # The valid fleet scales on a backlog as before, with every bad object beside it.
        replicas = ReplicasWatch(stack, canary.deployment)
        sent = time.time()
        ids = canary.send(6, 2.0)
        grown = wait_until(lambda: next((at for at, n in replicas.changes() if n > 1), None),
                           timeout=30, what="the valid fleet growing")
        print(f"burst -> the valid fleet's replicas raised after {grown - sent:.2f} s")
        assert canary.wait_done(ids).lost == 0
        replicas.stop()

        # Every bad object that was accepted says why it is not ready.
        for bad in accepted:
            def reported(bad: Bad = bad) -> Json | None:
                ready = ready_of(stack, bad.name)
                if ready.get("status") != "False":
                    return None
                if bad.reason and ready.get("reason") != bad.reason:
                    return None
                return ready if bad.names in ready.get("message", "") else None

            wait_until(reported, timeout=120, interval=1,
                       what=f"{bad.name} reporting Ready False ({bad.reason or 'any'}, "
                            f"naming {bad.names!r}): now {ready_of(stack, bad.name)}")

        # No secret anywhere; the operator healthy and never restarted.
        assert PASSWORD not in everything_shown(stack)
        status = stack.operator_pod()["status"]["containerStatuses"][0]
        assert status["ready"] and status["restartCount"] == restarts
        assert "Traceback" not in stack.operator_logs()
    finally:
        for bad in cases(image, server, blocked):
            stack.kubectl("delete", "-n", NAMESPACE, "metamapper", bad.name,
                          "--ignore-not-found", "--wait=true", check=False)
        stack.kubectl("delete", "-n", NAMESPACE, "secret", "containment-broker",
                      "--ignore-not-found", check=False)
