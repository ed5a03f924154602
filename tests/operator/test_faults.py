"""API faults the real apiserver will not produce on demand, scripted with kmock.

The operator talks to the real apiserver through ``FaultProxy``: kmock in front of it,
passing every request through except the few a test scripts to fail (a 500, a 409, a 429
with Retry-After, a watch cut short). The operator must retry, converge to exactly the
children it would have made without the faults, and keep running.

The operator here runs on a control plane of its own (``lone_cluster``), limited to the
test's namespace: on the shared ``cluster`` the session's operator would act on the same
objects without going through the proxy.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from devenv.stack import Daemon
from devenv.waiting import wait_until
from metamapper_operator.builders import MANAGER
from metamapper_operator.crd import GROUP, PLURAL, VERSION
from tests.conftest import Cluster
from tests.operator.conftest import start_operator
from tests.operator.faultproxy import FaultProxy, status
from tests.operator.fleet import apply, broker_secret, condition, fleet, get, items
from tests.operator.test_autoscale import events, push, redis_fleet, replicas

DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
CONFIGMAPS = kmock.resource("", "v1", "configmaps")
METAMAPPERS = kmock.resource(GROUP, VERSION, PLURAL)
PATCH, WATCH = kmock.method.PATCH, kmock.action.WATCH
BY_OPERATOR = {"fieldManager": MANAGER}  # the operator's own writes, not kopf's
CHILDREN = {"mm-default", "mm-revisioner", "mm-scheduler"}


@pytest.fixture
def proxy(lone_cluster: Cluster) -> Iterator[FaultProxy]:
    with FaultProxy(lone_cluster.plane.server, lone_cluster.plane.pki) as running:
        yield running
        assert running.kmock.errors == []  # nothing went wrong inside the proxy


@pytest.fixture
def home(lone_cluster: Cluster) -> Iterator[str]:
    """The test's namespace on the lone cluster; its Metamappers are gone afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    lone_cluster.kubectl("create", "namespace", name)
    yield name
    lone_cluster.kubectl("delete", "metamapper", "--all", "-n", name)
    lone_cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def start(proxy: FaultProxy, home: str, tmp_path: Path) -> Iterator[Callable[[], Daemon]]:
    """Starts the operator, through the proxy, for ``home`` only (script faults first)."""
    started: list[Daemon] = []

    def run() -> Daemon:
        started.append(start_operator(proxy.write_kubeconfig(tmp_path / "kubeconfig"),
                                      tmp_path / "operator.log", f"--namespace={home}"))
        return started[-1]

    yield run
    for daemon in started:
        daemon.stop()


def served_later(fault: kmock.View, passed: kmock.View) -> bool:
    """Each request a scripted fault answered was followed by one to the same object that
    passed through to the apiserver."""
    return all(any(later.id > failed.id and later.url.path == failed.url.path
                   for later in passed) for failed in fault)


def assert_survived(operator: Daemon) -> str:
    log = operator.output()
    assert operator.alive(), log[-5000:]
    assert "Traceback" not in log, log[-5000:]
    return log


def test_reconcile_converges_through_api_faults_without_duplicates(
        lone_cluster: Cluster, home: str, proxy: FaultProxy, start: Callable[[], Daemon],
        redis_url: str) -> None:
    k = proxy.kmock
    apply_500 = k[PATCH, DEPLOYMENTS, kmock.subresource(None), BY_OPERATOR][:2] \
        << 500 << status(500, "etcdserver: request timed out")
    create_429 = k[PATCH, CONFIGMAPS, BY_OPERATOR][:1] \
        << 429 << {"Retry-After": "1"} << status(429, "too many requests, please try again")
    status_409 = k[PATCH, METAMAPPERS, kmock.subresource("status"), BY_OPERATOR][:1] \
        << 409 << status(409, "the object has been modified; please apply your changes "
                              "to the latest version and try again")
    cut_watch = k[WATCH, METAMAPPERS][:1] << proxy.cut_after(1)
    empty_watch = k[WATCH, DEPLOYMENTS][:1] << proxy.cut_after(0)
    operator = start()
    apply(lone_cluster, home, broker_secret(redis_url), fleet())

    def converged() -> dict[str, Any]:
        obj = get(lone_cluster, home, "metamapper", "mm")
        if obj is None:
            return {}
        ok = ((obj.get("status") or {}).get("observedGeneration")
              == obj["metadata"]["generation"]
              and condition(obj, "Degraded").get("status") == "False"
              and condition(obj, "Progressing").get("reason") == "RollingOut"
              and condition(obj, "Ready").get("status") == "False")  # no kubelet: Pending
        return obj if ok else {}

    wait_until(converged, timeout=60, what="the status to converge")
    deployments = [d["metadata"]["name"] for d in items(lone_cluster, home, "deployments")]
    configmaps = [c["metadata"]["name"] for c in items(lone_cluster, home, "configmaps")
                  if c["metadata"]["name"] != "kube-root-ca.crt"]
    assert sorted(deployments) == sorted(CHILDREN)  # each exactly once
    assert configmaps == ["mm-celery"]

    assert len(apply_500) == 2 and len(create_429) == 1 and len(status_409) == 1
    for fault in (apply_500, create_429, status_409):
        assert served_later(fault, proxy.passed), list(fault)
    assert len(cut_watch) == 1 and len(empty_watch) == 1
    # Each watch was started again after it ended.
    assert len(k[WATCH, METAMAPPERS]) >= 2 and len(k[WATCH, DEPLOYMENTS]) >= 2

    # A change made after the cut still arrives: the watch was re-established.
    changed = fleet()
    changed["spec"]["pools"][0]["concurrency"] = 8
    apply(lone_cluster, home, changed)

    def concurrency() -> str:
        dep = get(lone_cluster, home, "deployment", "mm-default") or {}
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"] if dep else []
        return str(args[args.index("--concurrency") + 1]) if "--concurrency" in args else ""

    wait_until(lambda: concurrency() == "8", what="concurrency 8 applied")
    wait_until(converged, what="the status of generation 2")
    assert sorted(d["metadata"]["name"] for d in items(lone_cluster, home, "deployments")) \
        == sorted(CHILDREN)

    failures = " | ".join(events(lone_cluster, home, "ApplyFailed"))
    assert "applying ConfigMap" in failures and "429 too many requests" in failures, failures
    assert "applying Deployment" in failures and "500 etcdserver" in failures, failures
    log = assert_survived(operator)
    assert "500 etcdserver: request timed out" in log, log[-5000:]


def test_autoscaler_applies_a_failed_scale_on_the_next_cycle(
        lone_cluster: Cluster, home: str, proxy: FaultProxy, start: Callable[[], Daemon],
        redis_url: str) -> None:
    k = proxy.kmock
    scales = k[PATCH, DEPLOYMENTS, kmock.subresource("scale")]
    scale_500 = scales[:1] << 500 << status(500, "etcdserver: leader changed")
    operator = start()
    apply(lone_cluster, home, redis_fleet(redis_url))
    wait_until(lambda: replicas(lone_cluster, home) == 1, what="the pool at minReplicas")
    assert len(scales) == 0

    push(redis_url, 5)  # 5 waiting / 2 per pod -> 3 pods
    wait_until(lambda: replicas(lone_cluster, home) == 3, timeout=20, what="3 pods")
    assert len(scale_500) == 1
    assert served_later(scale_500, proxy.passed)
    assert [r.data for r in proxy.passed if r in scales] == [{"spec": {"replicas": 3}}]
    log = assert_survived(operator)
    assert "scaling Deployment" in log and "500 etcdserver: leader changed" in log, log
