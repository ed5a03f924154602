"""Fixtures over real services and a real local Kubernetes control plane.

Every service is the real thing, started by the project's own scripts
(``devenv``); a missing one fails the suite with a message that
says what to install. Each test gets isolated state: its own Redis database, RabbitMQ
vhost, PostgreSQL and MariaDB database, and Kubernetes namespace.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from xdist.remote import Producer

from devenv import redis_claims, services
from devenv.controlplane import PORT_SHARE, ControlPlane, ControlPlaneError, tool_dirs
from devenv.waiting import wait_until
from metamapper_operator import crd
from tests.helpers import PRODUCTION_REDIS, OwnRedis, running_redis
from tests.scheduling import Groups, GroupScheduling

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.chart.helpers"]

# The end-to-end tests whose outcome depends on timing: they wait for a real node, control
# plane or worker. Marked ``timing`` so hack/repeat_tests.py can run them over and over.
TIMING_DEPENDENT = ("tests/e2e/", "tests/operator/", "tests/node/", "tests/brokers/test_drain.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(TIMING_DEPENDENT):
            item.add_marker(pytest.mark.timing)


# --- the suite in several processes (TEST_WORKERS=2) ---------------------------------

#: Tests that run in one process when the suite runs in several (``pytest -n``, see
#: tests/scheduling.py); each group's tests run in one worker, in the order collected.
GROUPS: Groups = {
    # The node: one node stack at most may exist on the machine (one container runtime,
    # pod network and kubelet root), and the images are built in one store. tests/node/
    # runs after the end-to-end package, whose stack is torn down first.
    # tests/test_groups.py fails on a test outside it that uses NODE_FIXTURES.
    "node": ("tests/devenv/test_images.py", "tests/e2e/", "tests/node/"),
    # The RBAC matrix runs every case of its module at once, in lanes of control planes
    # of their own (its `matrix` fixture): split over two processes, each would run them all.
    "rbac-matrix": ("tests/operator/test_rbac.py",),
}
#: The fixtures that start the node or build its images.
NODE_FIXTURES = frozenset({"stack", "built"})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> GroupScheduling:
    """With ``-n``, whatever ``--dist`` says: another distribution would split a group."""
    return GroupScheduling(config, log, GROUPS)


def pytest_configure(config: pytest.Config) -> None:
    """In a worker of ``pytest -n N``, ports come from a share of their own: ``gwI`` takes
    the I-th of N. A worker started after a crash (``gwN`` and on) takes share I mod N,
    which may be a live worker's: after a crash, two workers may share one."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get(
        "PYTEST_XDIST_WORKER_COUNT")
    if worker and count:
        os.environ[PORT_SHARE] = f"{int(worker.removeprefix('gw')) % int(count)}/{count}"


def _ensure(name: str) -> None:
    try:
        services.ensure(name)
    except services.ServiceError as err:
        pytest.fail(f"{name} is needed and could not be started: {err}", pytrace=False)


# --- services ----------------------------------------------------------------------

@contextmanager
def claimed_redis_database() -> Iterator[str]:
    """The URL of a Redis database of the caller's own, empty at the start, emptied and
    given back on exit.

    Databases are claimed in database 0 (SET NX with an expiry, ``devenv.redis_claims``),
    so test runs sharing the server (two suites at once, or ``make demo``) never get the
    same one.
    """
    _ensure("redis")
    held = redis_claims.claim(random.sample(range(1, 256), 255), seconds=900)
    if held is None:
        pytest.fail("every Redis test database is claimed; is another run stuck?")
    try:
        yield held.url
    finally:
        redis_claims.release(held)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis database of this test's own, empty at the start."""
    with claimed_redis_database() as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis server of the test's own (on a free port), for tests that stop and start it."""
    with running_redis(tmp_path) as server:
        yield server


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis of the test's own, persisted as production runs it (an append-only file), in
    a folder of its own: the broker-restart tests'."""
    with running_redis(tmp_path / "broker", options=PRODUCTION_REDIS) as server:
        yield server


@dataclass(frozen=True)
class RabbitMQ:
    vhost: str
    user: str = services.RABBITMQ_USER
    password: str = services.RABBITMQ_PASSWORD
    host: str = services.HOST
    port: int = services.RABBITMQ_PORT

    @property
    def amqp_url(self) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{self.vhost}"

    @property
    def management_url(self) -> str:
        return f"http://{self.host}:{services.RABBITMQ_MANAGEMENT_PORT}"


@pytest.fixture
def rabbitmq() -> Iterator[RabbitMQ]:
    """A RabbitMQ vhost of this test's own (AMQP and management API)."""
    _ensure("rabbitmq")
    vhost = f"test-{uuid.uuid4().hex[:10]}"
    services.rabbitmq_api("PUT", f"vhosts/{vhost}")
    services.rabbitmq_api("PUT", f"permissions/{vhost}/{services.RABBITMQ_USER}",
                          {"configure": ".*", "write": ".*", "read": ".*"})
    yield RabbitMQ(vhost)
    services.rabbitmq_api("DELETE", f"vhosts/{vhost}")


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL database of this test's own, dropped afterwards."""
    import psycopg

    _ensure("postgres")
    admin = f"postgresql://postgres@127.0.0.1:{services.POSTGRES_PORT}/postgres"
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:{services.POSTGRES_PORT}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mariadb_dsn() -> Iterator[str]:
    """A MariaDB database of this test's own, dropped afterwards."""
    import pymysql

    _ensure("mariadb")
    name = f"test_{uuid.uuid4().hex[:12]}"
    conn = pymysql.connect(host="127.0.0.1", port=services.MARIADB_PORT, user="root",
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    yield f"mysql://root@127.0.0.1:{services.MARIADB_PORT}/{name}"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


@pytest.fixture(scope="session")
def sqs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's SQS-compatible server: AWS itself cannot be reached from here."""
    from devenv.controlplane import free_port

    port = free_port()
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("moto_server not found: `pip install -e .[dev]` (moto[server])")
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    services.wait_for(lambda: services.port_open(port), "moto_server", 30, Path(log.name),
                      proc.pid)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait()
    log.close()


# --- Kubernetes --------------------------------------------------------------------


@dataclass
class Cluster:
    """A running local control plane and the real CLIs pointed at it."""

    plane: ControlPlane
    kubectl_path: Path
    helm_path: Path

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig_path

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}",
                                 *args], input=input, capture_output=True, text=True,
                                timeout=120)
        if check and result.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def wait_established(self, crd_name: str) -> None:
        """Until the CRD is Established. Not `kubectl wait --for=condition=Established`:
        it fails at once on a CRD whose conditions are not written yet."""
        wait_until(lambda: self.kubectl(
            "get", f"crd/{crd_name}", "-o",
            'jsonpath={.status.conditions[?(@.type=="Established")].status}',
            check=False).stdout == "True", what=f"the CRD {crd_name} to be Established")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """etcd + kube-apiserver + kube-controller-manager with the project's CRDs installed."""
    try:
        kube, helm = tool_dirs()
        plane = ControlPlane(tmp_path_factory.mktemp("cluster"))
        plane.start()
    except ControlPlaneError as err:
        pytest.fail(f"the local control plane could not start: {err}", pytrace=False)
    found = Cluster(plane, kube / "kubectl", helm / "helm")
    try:
        found.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        found.wait_established(crd.NAME)
        # The published OpenAPI (what `kubectl explain` reads) lags Established a little.
        wait_until(lambda: found.kubectl("explain", "metamapper", check=False).returncode == 0,
                   what="the CRD's OpenAPI to be published")
        yield found
    finally:
        plane.stop()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of this test's own, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")

