"""Exactly one active operator: real ``metamapper-operator`` processes electing a leader on
the chart's Lease, against the real apiserver, each with a token of its own.

One scenario: A leads and B stands by while a pool scales up; A is killed (B takes over);
C starts, B is paused past the lease (SIGSTOP; C takes over) and resumed (it must end
itself without a single write); D starts and C stops cleanly, as in a rolling update (C
hands the Lease over). The backlog changes at every stage, so every leader has work. The
audit log then shows that the writes came from one process at a time and that no Scaled
event was posted twice.

The processes watch every namespace, so they run on a control plane of their own
(``lone_cluster``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from devenv import stack
from devenv.waiting import wait_until
from metamapper_operator.leader import EXIT_LOST
from tests.chart.helpers import (
    ChartAccess,
    install_chart_access,
    service_account_kubeconfig,
    uninstall_chart_access,
    unique,
)
from tests.conftest import Cluster
from tests.operator.conftest import RESYNC_SECONDS, WRITE_VERBS
from tests.operator.fleet import apply, broker_secret, fleet, get, items
from tests.operator.test_autoscale import push

LEASE_SECONDS = 6.0
RETRY_SECONDS = LEASE_SECONDS * 2 / 15  # what --lease-duration sets
CREDENTIAL = "authentication.kubernetes.io/credential-id"
SCALED = re.compile(r"pool (\w+): (\d+) -> (\d+) pods")


@dataclass
class Candidates:
    """Operator processes of one release, each started with a token of its own."""

    cluster: Cluster
    access: ChartAccess
    workdir: Path

    def start(self, name: str, lease_seconds: float = LEASE_SECONDS) -> stack.Daemon:
        kubeconfig = service_account_kubeconfig(
            self.cluster, self.access.namespace, self.access.service_account,
            self.workdir / f"{name}.kubeconfig")
        return stack.start_operator(
            kubeconfig, self.workdir / f"{name}.log", "--resync-interval", str(RESYNC_SECONDS),
            "--poll-interval", "1", f"--lease={self.access.lease}",
            f"--lease-duration={lease_seconds:g}", env={**os.environ, "HOSTNAME": name})

    def holder(self) -> str:
        namespace, name = self.access.lease.split("/")
        return self.cluster.kubectl("get", "lease", name, "-n", namespace, "-o",
                                    "jsonpath={.spec.holderIdentity}", check=False).stdout

    def takeover(self, name: str, act: Callable[[], object]) -> float:
        """Seconds from ``act()`` until process ``name`` holds the Lease."""
        started = time.monotonic()
        act()
        wait_until(lambda: self.holder().startswith(f"{name}_"), timeout=4 * LEASE_SECONDS,
                   interval=0.1, what=f"{name} to take the Lease")
        return time.monotonic() - started


def replicas(cluster: Cluster, namespace: str) -> int:
    dep = get(cluster, namespace, "deployment", "mm-default")
    return int(dep["spec"]["replicas"]) if dep else -1


def writes_by_process(cluster: Cluster, user: str) -> list[tuple[str, str, str]]:
    """(time, credential, 'verb resource/name') of every write that took effect, made
    with ``user``'s tokens, in the order the apiserver received them."""
    found = []
    with cluster.plane.audit_log.open() as log:
        for line in log:
            event: dict[str, Any] = json.loads(line)
            if (event.get("stage") != "ResponseComplete" or event["verb"] not in WRITE_VERBS
                    or event["user"]["username"] != user
                    or event.get("responseStatus", {}).get("code", 500) >= 400):
                continue
            ref = event.get("objectRef", {})
            what = f"{event['verb']} {ref.get('resource')}/{ref.get('name', '')}"
            found.append((event["requestReceivedTimestamp"],
                          event["user"]["extra"][CREDENTIAL][0], what))
    return sorted(found)


def test_one_operator_acts_at_a_time_through_kill_pause_and_roll(
        lone_cluster: Cluster, redis_url: str, tmp_path: Path) -> None:
    cluster = lone_cluster
    home, namespace = unique("ha-home"), unique("ha")
    for ns in (home, namespace):
        cluster.kubectl("create", "namespace", ns)
    access = install_chart_access(cluster, home, {"replicas": 2}, tmp_path / "kubeconfig")
    candidates = Candidates(cluster, access, tmp_path)
    processes: list[stack.Daemon] = []
    takeovers: dict[str, float] = {}
    try:
        a = candidates.start("a")
        processes.append(a)
        wait_until(lambda: candidates.holder().startswith("a_"), what="a to lead")
        b = candidates.start("b")
        processes.append(b)
        body = fleet(scheduler={"enabled": False}, pools=[{
            "name": "default", "queues": ["default"], "concurrency": 2, "minReplicas": 1,
            "maxReplicas": 10, "autoscaling": {
                "scaleDownStabilizationSeconds": 3, "scaleToZeroCooldownSeconds": 1,
                # About leadership, not the policy: the backlog target alone, down in
                # one step to the window's maximum, no panic window.
                "targetWaitSeconds": 0, "scaleDownPercentile": 100,
                "scaleDownStepPercent": 100, "panicWindowSeconds": 0}}])
        apply(cluster, namespace, broker_secret(redis_url), body)
        wait_until(lambda: replicas(cluster, namespace) == 1, what="the pool at 1")
        push(redis_url, 3)
        wait_until(lambda: replicas(cluster, namespace) == 2, what="2 pods (a leads)")
        assert candidates.holder().startswith("a_")

        # A dies: B takes over within the lease duration and one retry.
        takeovers["kill"] = candidates.takeover("b", a.kill)
        push(redis_url, 6)
        wait_until(lambda: replicas(cluster, namespace) == 5, what="5 pods (b leads)")

        # B is paused past the lease: C takes over; resumed, B ends itself.
        c = candidates.start("c")
        processes.append(c)
        takeovers["pause"] = candidates.takeover("c", lambda: os.kill(b.proc.pid,
                                                                      signal.SIGSTOP))
        redis.Redis.from_url(redis_url).delete("default")
        wait_until(lambda: replicas(cluster, namespace) == 1, what="back to 1 (c leads)")
        os.kill(b.proc.pid, signal.SIGCONT)
        assert b.proc.wait(timeout=10) == EXIT_LOST, b.tail()

        # A rolling update: D starts, C is stopped (SIGTERM) and hands the Lease over.
        d = candidates.start("d")
        processes.append(d)
        takeovers["roll"] = candidates.takeover("d", c.stop)
        push(redis_url, 3)
        wait_until(lambda: replicas(cluster, namespace) == 2, what="2 pods (d leads)")
        # Let the last events and statuses land before reading them and the audit log.
        time.sleep(2 * RESYNC_SECONDS)
        events = sorted((e.get("firstTimestamp") or "", e["message"])
                        for e in items(cluster, namespace, "events")
                        if e["reason"] in {"ScaledUp", "ScaledDown"})
    finally:
        for process in processes:
            process.stop()
        cluster.kubectl("delete", "metamapper", "--all", "-n", namespace)
        uninstall_chart_access(access)
        for ns in (home, namespace):
            cluster.kubectl("delete", "namespace", ns, "--wait=false")

    print(f"takeover seconds: {takeovers}")
    # The lease duration after the standby last saw the record change: up to one retry
    # period after the leader's last renewal, seen up to one retry period late, plus
    # this test's polling.
    bound = LEASE_SECONDS + 2 * RETRY_SECONDS + 1.0
    assert takeovers["kill"] <= bound and takeovers["pause"] <= bound, takeovers
    # Handed over, not left to expire (the time includes C's own clean shutdown).
    assert takeovers["roll"] < LEASE_SECONDS, takeovers
    for process in processes:
        output = process.output()
        assert "Traceback" not in output and " 403 " not in output, output[-5000:]
    assert "leadership lost" in b.output()

    # Writes came from one process at a time: once another process wrote, an earlier one
    # never wrote again (every process has a token of its own, so a credential of its own).
    writes = writes_by_process(cluster, f"system:serviceaccount:{home}:{access.service_account}")
    runs: list[str] = []
    for _, credential, _ in writes:
        if not runs or runs[-1] != credential:
            runs.append(credential)
    assert len(runs) == len(set(runs)) == 4, (runs, writes)

    # Every pool size change was announced once, in order: 1->2, 2->5, 5->1, 1->2.
    changes = [SCALED.search(message) for _, message in events]
    steps = [(int(m[2]), int(m[3])) for m in changes if m]
    assert len(steps) == len(events), events
    assert steps == [(1, 2), (2, 5), (5, 1), (1, 2)], events


def test_a_standby_waits_for_the_duration_the_lease_states(
        lone_cluster: Cluster, tmp_path: Path) -> None:
    """A standby started with a shorter --lease-duration than the leader's waits for the
    leader's (the Lease's leaseDurationSeconds): the leader may still be writing until then.
    A safety bound, not a speed one: a slower machine only makes the takeover later."""
    cluster = lone_cluster
    home = unique("ha-home")
    cluster.kubectl("create", "namespace", home)
    access = install_chart_access(cluster, home, {"replicas": 2}, tmp_path / "kubeconfig")
    candidates = Candidates(cluster, access, tmp_path)
    long_lease, short_lease = 12.0, 3.0
    processes: list[stack.Daemon] = []
    try:
        a = candidates.start("a", lease_seconds=long_lease)
        processes.append(a)
        wait_until(lambda: candidates.holder().startswith("a_"), what="a to lead")
        b = candidates.start("b", lease_seconds=short_lease)
        processes.append(b)
        wait_until(lambda: "standing by" in b.output(), what="b to stand by")
        took = candidates.takeover("b", lambda: os.kill(a.proc.pid, signal.SIGSTOP))
        os.kill(a.proc.pid, signal.SIGCONT)
        assert a.proc.wait(timeout=10) == EXIT_LOST, a.tail()
    finally:
        for process in processes:
            process.stop()
        uninstall_chart_access(access)
        cluster.kubectl("delete", "namespace", home, "--wait=false")
    print(f"takeover seconds: {took:.2f}")
    # a's last renewal came at most one of its retry periods (and a renewal's own time)
    # before the pause; b's own duration would have let it act within about 3 + 1.6 s.
    assert took >= long_lease - 2 * long_lease * 2 / 15, took
