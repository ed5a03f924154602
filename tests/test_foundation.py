"""The plumbing is real: the control plane, its controllers, the CRD, and the services."""

from __future__ import annotations

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
    assert obj["spec"]["pools"][0]["autoscaling"]["scaleDownStabilizationSeconds"] == 300
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
