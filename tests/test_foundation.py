"""The plumbing is real: the control plane, its controllers, the CRD, and the services."""

from __future__ import annotations

import copy
import json

import amqp
import psycopg
import pymysql
import redis

from devenv import services
from devenv.waiting import wait_until
from metamapper_operator import crd
from tests.conftest import REPO, Cluster, RabbitMQ


def test_crd_is_installed_and_served(cluster: Cluster) -> None:
    found = json.loads(cluster.kubectl("get", "crd", crd.NAME,
                                     "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in found["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert found["spec"]["names"]["shortNames"] == [crd.SHORT_NAME]
    explained = cluster.kubectl("explain", "metamapper.spec.pools.queues").stdout
    assert "Celery queues the pool consumes" in explained


def test_example_is_accepted_by_kubectl_apply(cluster: Cluster, namespace: str) -> None:
    result = cluster.kubectl("apply", "-n", namespace, "-f",
                             str(REPO / "examples" / "metamapper.yaml"))
    assert "metamapper.metamapper.io/metamapper created" in result.stdout
    obj = json.loads(cluster.kubectl("get", "-n", namespace, "mm", "metamapper",
                                     "-o", "json").stdout)
    # Defaults come from the CRD's schema, applied by the apiserver.
    assert obj["spec"]["pools"][0]["autoscaling"]["scaleDownStabilizationSeconds"] == 60
    assert obj["spec"]["scheduler"]["lock"]["lockTimeSeconds"] == 5


def test_schema_violation_is_refused_with_the_apiservers_message(
        cluster: Cluster, namespace: str) -> None:
    bad = f"apiVersion: {crd.API_VERSION}\nkind: {crd.KIND}" + """
metadata: {name: bad}
spec:
  image: worker:1
  broker: {url: "redis://redis:6379/0"}
  pools: [{name: default, queues: [default], minReplicas: 5, maxReplicas: 2}]
"""
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.pools[0].minReplicas" in result.stderr
    assert "minReplicas must be less than or equal to maxReplicas" in result.stderr


def test_deployment_gets_a_replicaset_from_the_controller_manager(
        cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "deployment", "web", "-n", namespace, "--image=busybox:1",
                    "--replicas=2")

    def replicasets() -> list[dict]:
        out = cluster.kubectl("get", "rs", "-n", namespace, "-o", "json").stdout
        return [rs for rs in json.loads(out)["items"] if rs["spec"]["replicas"] == 2]

    [rs] = wait_until(replicasets, what="a ReplicaSet for the Deployment")
    assert rs["metadata"]["ownerReferences"][0]["name"] == "web"

    def pods() -> list[dict]:
        return json.loads(cluster.kubectl("get", "pods", "-n", namespace,
                                          "-o", "json").stdout)["items"]

    assert len(wait_until(lambda: len(pods()) == 2 and pods(), what="two pods")) == 2


def test_redis_answers(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.rpush("q", "a", "b")
    assert client.llen("q") == 2


def test_rabbitmq_answers_over_amqp_and_the_management_api(rabbitmq: RabbitMQ) -> None:
    with amqp.Connection(f"{rabbitmq.host}:{rabbitmq.port}", userid=rabbitmq.user,
                         password=rabbitmq.password, virtual_host=rabbitmq.vhost) as conn:
        channel = conn.channel()
        channel.queue_declare("smoke", durable=True, auto_delete=False)
        channel.basic_publish(amqp.Message("hello"), routing_key="smoke")

    def ready() -> int:
        queue = services.rabbitmq_api("GET", f"queues/{rabbitmq.vhost}/smoke")
        assert isinstance(queue, dict)
        return int(queue.get("messages_ready", 0))

    assert wait_until(ready, what="the management API to count the message") == 1


def test_postgresql_answers(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute("select current_database(), 1 + 1").fetchone()
    assert row is not None and row[0] == postgres_dsn.rsplit("/", 1)[1] and row[1] == 2


def test_mariadb_answers(mariadb_dsn: str) -> None:
    database = mariadb_dsn.rsplit("/", 1)[1]
    conn = pymysql.connect(host="127.0.0.1", port=services.MARIADB_PORT, user="root",
                           database=database)
    with conn.cursor() as cur:
        cur.execute("select database(), version()")
        name, version = cur.fetchone()
    conn.close()
    assert name == database and "MariaDB" in version


POD_SETTINGS_BASE: dict = {
    "apiVersion": "metamapper.io/v1alpha1", "kind": "Metamapper",
    "metadata": {"name": "pods"},
    "spec": {"image": "worker:1", "broker": {"url": "redis://redis:6379/0"},
             "volumes": [{"name": "ca", "secret": {"secretName": "ca"}}],
             "pools": [{"name": "default", "queues": ["default"]}]},
}

# (what, fields merged into spec, fields merged into spec.pools[0], texts of the refusal)
POD_SETTINGS_REFUSED: list[tuple[str, dict, dict, list[str]]] = [
    ("duplicate env name", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
     {}, ["spec.env[1]", "Duplicate value"]),
    ("duplicate pool env name", {}, {"env": [{"name": "A"}, {"name": "A"}]},
     ["spec.pools[0].env[1]", "Duplicate value"]),
    ("mount naming no volume", {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, {},
     ["spec.volumeMounts", "must name a volume of spec.volumes"]),
    ("pool mount naming no volume", {},
     {"volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
     ["spec.pools", "must name a volume of the pool or of spec.volumes"]),
    ("sidecar named like the worker", {}, {"sidecars": [{"name": "worker", "image": "x:1"}]},
     ["spec.pools[0].sidecars[0].name", "reserved for the operator's containers"]),
    ("init container named scheduler", {"initContainers": [{"name": "scheduler",
                                                            "image": "x:1"}]}, {},
     ["spec.initContainers[0].name", "reserved for the operator's containers"]),
    ("duplicate sidecars", {"sidecars": [{"name": "a", "image": "x:1"},
                                         {"name": "a", "image": "y:1"}]}, {},
     ["spec.sidecars[1]", "Duplicate value"]),
    ("sidecar without image", {}, {"sidecars": [{"name": "a"}]},
     ["spec.pools[0].sidecars[0].image", "Required value"]),
    ("volume named tmp", {"volumes": [{"name": "tmp", "emptyDir": {}}]}, {},
     ["spec.volumes[0].name", "reserved for the operator's /tmp volume"]),
    ("mount over /tmp", {"volumeMounts": [{"name": "ca", "mountPath": "/tmp"}]}, {},
     ["spec.volumeMounts[0].mountPath", "taken by the operator's /tmp volume"]),
    ("two mounts at one path", {"volumeMounts": [{"name": "ca", "mountPath": "/a"},
                                                 {"name": "ca", "mountPath": "/a"}]}, {},
     ["spec.volumeMounts[1]", "Duplicate value"]),
    ("bad toleration operator", {}, {"tolerations": [{"key": "a", "operator": "Maybe"}]},
     ["spec.pools[0].tolerations[0].operator", "Unsupported value"]),
    ("spread without topologyKey", {"topologySpreadConstraints": [
        {"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}, {},
     ["spec.topologySpreadConstraints[0].topologyKey", "Required value"]),
    ("envFrom with both sources", {}, {"envFrom": [{"configMapRef": {"name": "a"},
                                                    "secretRef": {"name": "b"}}]},
     ["spec.pools[0].envFrom[0]", "exactly one of configMapRef or secretRef"]),
    ("uppercase pool image", {}, {"image": "Worker:1"}, ["spec.pools[0].image", "should match"]),
    ("bad maxUnavailable", {}, {"podDisruptionBudget": {"maxUnavailable": "half"}},
     ["spec.pools[0].podDisruptionBudget.maxUnavailable", "should match"]),
    ("network policy without egress", {"networkPolicy": {"enabled": True}}, {},
     ["spec.networkPolicy", "must allow at least the broker"]),
]


def test_the_apiserver_refuses_pod_settings_that_cannot_work(
        cluster: Cluster, namespace: str) -> None:
    for what, spec, pool, expected in POD_SETTINGS_REFUSED:
        body = copy.deepcopy(POD_SETTINGS_BASE)
        body["spec"].update(spec)
        body["spec"]["pools"][0].update(pool)
        result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-",
                                 input=json.dumps(body), check=False)
        assert result.returncode != 0, f"{what}: accepted"
        for text in expected:
            assert text in result.stderr, f"{what}: {text!r} not in {result.stderr}"


def test_every_new_pod_setting_is_explained(cluster: Cluster) -> None:
    for path, text in [
        ("metamapper.spec.pools.env", "merged with spec.env by name"),
        ("metamapper.spec.pools.sidecars", "merged with spec.sidecars by name"),
        ("metamapper.spec.pools.podDisruptionBudget.maxUnavailable", "percentage"),
        ("metamapper.spec.topologySpreadConstraints.whenUnsatisfiable", "maxSkew"),
        ("metamapper.spec.networkPolicy.egress", "besides DNS"),
        ("metamapper.spec.automountServiceAccountToken", "Off by default"),
    ]:
        explained = " ".join(cluster.kubectl("explain", path).stdout.split())
        assert text in explained, path


def test_the_platform_example_is_accepted_with_its_per_pool_settings(
        cluster: Cluster, namespace: str) -> None:
    result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-o", "json", "-f",
                             str(REPO / "examples" / "metamapper-platform.yaml"))
    spec = json.loads(result.stdout)["spec"]
    revisioner = spec["pools"][1]
    assert revisioner["env"] == [{"name": "METAMAPPER_LOG_LEVEL", "value": "DEBUG"}]
    assert revisioner["volumeMounts"][0]["mountPath"] == "/etc/ssl/warehouse"
    assert revisioner["podDisruptionBudget"] == {"enabled": True, "maxUnavailable": 1}
    assert spec["networkPolicy"]["enabled"] is True
