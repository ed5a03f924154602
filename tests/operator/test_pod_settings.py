"""Per-pool pod settings, disruption budgets, the NetworkPolicy and contradiction warnings,
reconciled by the operator against the real apiserver (and RabbitMQ's management API)."""

from __future__ import annotations

import json

import amqp

from devenv.waiting import wait_until
from tests.conftest import Cluster, RabbitMQ
from tests.operator.conftest import OperatorProcess
from tests.operator.fleet import apply, broker_secret, condition, fleet, get, wait_for_children

CHILDREN = {"mm-default", "mm-revisioner", "mm-scheduler"}


def _platform(**changes: object) -> dict:
    body = fleet(
        env=[{"name": "LOG_LEVEL", "value": "info"}],
        nodeSelector={"kubernetes.io/os": "linux"},
        volumes=[{"name": "ca", "secret": {"secretName": "ca"}}],
        networkPolicy={"enabled": True, "egress": [{"ports": [{"port": 6379}]}]},
    )
    revisioner = body["spec"]["pools"][1]
    revisioner.update({
        "image": "metamapper-worker:0.2.0",
        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
        "nodeSelector": {"node.kubernetes.io/instance-type": "highmem"},
        "volumeMounts": [{"name": "ca", "mountPath": "/etc/ca", "readOnly": True}],
        "sidecars": [{"name": "proxy", "image": "proxy:1"}],
        "podDisruptionBudget": {"maxUnavailable": "50%"},
    })
    body["spec"].update(changes)
    return body


def _budgets(cluster: Cluster, namespace: str) -> dict[str, dict]:
    out = cluster.kubectl("get", "-n", namespace, "poddisruptionbudgets", "-o", "json").stdout
    return {b["metadata"]["name"]: b for b in json.loads(out)["items"]}


def test_pools_get_their_merged_settings_budgets_and_the_fleets_policy(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    apply(cluster, namespace, broker_secret(), _platform())
    deps = wait_for_children(cluster, namespace, CHILDREN)
    revisioner = deps["mm-revisioner"]["spec"]["template"]["spec"]
    default = deps["mm-default"]["spec"]["template"]["spec"]
    worker = revisioner["containers"][0]
    assert worker["image"] == "metamapper-worker:0.2.0"
    assert default["containers"][0]["image"] == "metamapper-worker:0.1.0"
    assert {e["name"]: e.get("value") for e in worker["env"]}["LOG_LEVEL"] == "debug"
    assert {e["name"]: e.get("value") for e in default["containers"][0]["env"]}[
        "LOG_LEVEL"] == "info"
    assert revisioner["nodeSelector"] == {"kubernetes.io/os": "linux",
                                          "node.kubernetes.io/instance-type": "highmem"}
    assert [c["name"] for c in revisioner["containers"]] == ["worker", "proxy"]
    assert {"name": "ca", "mountPath": "/etc/ca", "readOnly": True} in worker["volumeMounts"]
    for spec in (revisioner, default):
        assert spec["automountServiceAccountToken"] is False
        assert spec["containers"][0]["resources"]["requests"] == {"cpu": "100m",
                                                                  "memory": "256Mi"}

    budgets = wait_until(lambda: (b := _budgets(cluster, namespace)) and len(b) == 2 and b,
                         what="a PodDisruptionBudget per pool")
    assert budgets["mm-default"]["spec"]["maxUnavailable"] == 1
    assert budgets["mm-revisioner"]["spec"]["maxUnavailable"] == "50%"
    assert budgets["mm-revisioner"]["spec"]["selector"]["matchLabels"][
        "metamapper.io/pool"] == "revisioner"
    policy = wait_until(lambda: get(cluster, namespace, "networkpolicy", "mm-pods"),
                        what="the fleet's NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"port": 6379, "protocol": "TCP"} in policy["spec"]["egress"][1]["ports"]

    # A budget turned off, a pool removed and the policy turned off: each child goes.
    changed = _platform(networkPolicy={"enabled": False})
    changed["spec"]["pools"][0]["podDisruptionBudget"] = {"enabled": False}
    apply(cluster, namespace, changed)
    wait_until(lambda: set(_budgets(cluster, namespace)) == {"mm-revisioner"},
               what="the default pool's budget deleted")
    wait_until(lambda: get(cluster, namespace, "networkpolicy", "mm-pods") is None,
               what="the NetworkPolicy deleted")
    changed["spec"]["pools"] = changed["spec"]["pools"][:1]
    apply(cluster, namespace, changed)
    wait_until(lambda: _budgets(cluster, namespace) == {}, what="the removed pool's budget")
    assert operator.alive()


def _warnings(cluster: Cluster, namespace: str) -> dict[str, str]:
    out = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                          "type=Warning", "-o", "json").stdout
    return {e["reason"]: e["message"] for e in json.loads(out)["items"]}


def test_settings_that_contradict_each_other_are_warnings(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    body = fleet(celery={"settings": {"task_time_limit": 600, "broker_transport_options": {
        "visibility_timeout": 300}}})
    body["spec"]["pools"][1]["terminationGracePeriodSeconds"] = 60
    apply(cluster, namespace, broker_secret(), body)

    def warned() -> dict[str, str] | None:
        obj = get(cluster, namespace, "metamapper", "mm")
        conditions = {kind: condition(obj, kind) for kind in
                      ("GracePeriodTooShort", "VisibilityTimeoutTooShort")}
        return conditions if all(c.get("status") == "True" for c in conditions.values()) \
            else None

    conditions = wait_until(warned, what="both warning conditions")
    assert "revisioner (60 s)" in conditions["GracePeriodTooShort"]["message"]
    assert "visibility_timeout (300 s)" in conditions["VisibilityTimeoutTooShort"]["message"]
    events = wait_until(lambda: (w := _warnings(cluster, namespace)) and
                        {"GracePeriodTooShort", "VisibilityTimeoutTooShort"} <= set(w) and w,
                        what="Warning events")
    assert "runs twice" in events["VisibilityTimeoutTooShort"]

    # Fixed settings clear the conditions.
    body["spec"]["celery"]["settings"]["broker_transport_options"]["visibility_timeout"] = 900
    body["spec"]["pools"][1]["terminationGracePeriodSeconds"] = 660
    apply(cluster, namespace, body)
    wait_until(lambda: condition(get(cluster, namespace, "metamapper", "mm"),
                                 "VisibilityTimeoutTooShort").get("status") == "False",
               what="VisibilityTimeoutTooShort cleared")
    assert condition(get(cluster, namespace, "metamapper", "mm"),
                     "GracePeriodTooShort")["status"] == "False"


def test_a_rabbitmq_queue_with_messages_and_no_consumer_or_pool_is_a_warning(
        cluster: Cluster, namespace: str, operator: OperatorProcess,
        rabbitmq: RabbitMQ) -> None:
    connection = amqp.Connection(host=f"{rabbitmq.host}:{rabbitmq.port}",
                                 userid=rabbitmq.user, password=rabbitmq.password,
                                 virtual_host=rabbitmq.vhost)
    connection.connect()
    try:
        channel = connection.channel()
        for queue in ("default", "reports-typo"):
            channel.queue_declare(queue, durable=True, auto_delete=False)
            channel.basic_publish(amqp.Message(b"{}"), routing_key=queue)
    finally:
        connection.close()
    body = fleet(broker={"urlSecretRef": {"name": "broker"},
                         "rabbitmq": {"managementURL": rabbitmq.management_url}},
                 scheduler={"enabled": False})
    apply(cluster, namespace, broker_secret(rabbitmq.amqp_url), body)

    def reported() -> dict | None:
        cond = condition(get(cluster, namespace, "metamapper", "mm"), "QueueWithoutConsumer")
        return cond if cond.get("status") == "True" else None

    cond = wait_until(reported, what="QueueWithoutConsumer")
    # "default" has no consumer either (no worker runs here), but a pool names it.
    assert "reports-typo" in cond["message"] and "default" not in cond["message"]
    events = wait_until(lambda: (w := _warnings(cluster, namespace)).get(
        "QueueWithoutConsumer") and w, what="the Warning event")
    assert "reports-typo" in events["QueueWithoutConsumer"]
    assert rabbitmq.password not in json.dumps(get(cluster, namespace, "metamapper", "mm"))
