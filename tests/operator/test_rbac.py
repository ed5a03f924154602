"""The chart's RBAC proven by the operator itself, with a real ServiceAccount token.

One scenario exercises everything the operator does: a Metamapper with two pools whose
broker URL is in a Secret; its children (Deployments, ConfigMap, disruption budgets, a
NetworkPolicy) and status; a pool scaled up by real Celery messages and down again once
they are gone (idle pods marked first); a pool removed, the NetworkPolicy turned off and
the bounds changed; at last, the operator at rest (no more writes). With the chart's rules
the scenario converges and the apiserver refuses nothing. With any one verb of one rule
taken away it stalls, and the operator's log shows the apiserver's 403 for exactly that
resource and verb: the chart grants no verb the operator does not need. Flower (its
Service) and a Standalone scheduler (whose pod's gate the operator lifts) are part of it.

The operator runs as the chart runs it, with leader election on the chart's Lease: a
standby refused the Lease never acts, a leader refused its renewal stops acting.

The operator watches every namespace, so it runs on a control plane of its own
(``lone_cluster``), where no other operator acts on the scenario's objects.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from devenv.waiting import wait_until
from metamapper_operator.builders import LABEL_POOL, MANAGER
from metamapper_operator.state import SCALE_SETTLE_SECONDS
from tests.chart.helpers import (
    ChartAccess,
    Rule,
    default_rules,
    install_chart_access,
    lone_control_plane,
    rules_of,
    uninstall_chart_access,
    unique,
)
from tests.conftest import Cluster, claimed_redis_database
from tests.operator.conftest import RESYNC_SECONDS, operator_writes, start_operator
from tests.operator.fleet import apply, broker_secret, fleet, get, items
from tests.operator.test_autoscale import push

FAST = {"scaleDownStabilizationSeconds": 2, "scaleToZeroCooldownSeconds": 1}
STEP_TIMEOUT = 30.0
# How long a step may still take once the operator has been refused something: a few
# resyncs (2 s), polls (1 s) and scale-down windows (2 s).
AFTER_REFUSAL = 8.0
# The apiserver's words for an RBAC denial, as the operator logs them (its own requests:
# "...: 403 <message>"; kopf's: "APIForbiddenError('<message>', ...)").
REFUSAL = re.compile(r'cannot (\w+) resource "([^"]+)" in API group "([^"]*)"')
FORBIDDEN = re.compile(r"\b403\b|forbidden", re.IGNORECASE)

Revoked = tuple[Rule, str]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One case per verb of every rule of the chart's default (Cluster)Roles."""
    if "revoked" in metafunc.fixturenames:
        cases = [(rule, verb) for rule in default_rules() for verb in rule.verbs]
        metafunc.parametrize("revoked", cases, ids=[f"{rule.id}-{verb}" for rule, verb in cases])


# --- the scenario ------------------------------------------------------------------


def pool(name: str, queues: list[str], min_replicas: int, max_replicas: int
         ) -> dict[str, Any]:
    return {"name": name, "queues": queues, "concurrency": 3, "minReplicas": min_replicas,
            "maxReplicas": max_replicas, "autoscaling": dict(FAST)}


def metamapper(*pools: dict[str, Any], network_policy: bool = False, **spec: Any
               ) -> dict[str, Any]:
    """The broker URL from the Secret ``broker``; no scheduler unless ``spec`` asks."""
    return fleet(**{"scheduler": {"enabled": False}, **spec}, pools=list(pools),
                 networkPolicy={"enabled": network_policy,
                                "egress": [{"ports": [{"port": 6379}]}]})


FLOWER_SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flower"},
                 "stringData": {"auth": "admin:rbac"}}


def scheduler_ungated(scene: Scene) -> bool:
    """The Standalone scheduler's one pod exists and the operator lifted its gate."""
    pods = [pod for pod in items(scene.cluster, scene.namespace, "pods")
            if pod["metadata"]["labels"].get("app.kubernetes.io/component") == "scheduler"]
    return len(pods) == 1 and not pods[0]["spec"].get("schedulingGates")


@dataclass(frozen=True)
class Scene:
    """The scenario's namespace (Metamapper ``mm``) and Redis database."""

    cluster: Cluster
    namespace: str
    redis_url: str

    def status(self) -> dict[str, Any]:
        """The Metamapper's status, once it describes the current spec."""
        obj = get(self.cluster, self.namespace, "metamapper", "mm") or {"metadata": {}}
        status = obj.get("status") or {}
        current = status.get("observedGeneration") == obj["metadata"].get("generation")
        return dict(status) if current else {}

    def pools(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self.status().get("pools") or []}

    def deployments(self) -> dict[str, dict[str, Any]]:
        return {dep["metadata"]["name"]: dep
                for dep in items(self.cluster, self.namespace, "deployments")}

    def pods(self, pool_name: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl("get", "pods", "-n", self.namespace, "-l",
                                   f"{LABEL_POOL}={pool_name}", "-o", "json").stdout
        return [pod for pod in json.loads(out)["items"]
                if not pod["metadata"].get("deletionTimestamp")]

    def names(self, kind: str) -> set[str]:
        return {obj["metadata"]["name"] for obj in items(self.cluster, self.namespace, kind)}

    def reasons(self) -> list[str]:
        return [event["reason"] for event in items(self.cluster, self.namespace, "events")]

    def named(self, reason: str) -> int:
        """The children the events of ``reason`` (Created, Deleted) name: one Event names
        every child one reconcile wrote for that reason."""
        word = f" {reason.lower()}"
        return sum(event["message"].count(word)
                   for event in items(self.cluster, self.namespace, "events")
                   if event["reason"] == reason)

    def most_counted(self) -> int:
        """The largest count of an Event the operator posted: a repeated event raises it
        (patch). The scheduler's own events (FailedScheduling, say) are counted by it."""
        return max((event.get("count") or 1
                    for event in items(self.cluster, self.namespace, "events")
                    if (event.get("source") or {}).get("component") == MANAGER),
                   default=0)

    def at_rest(self) -> bool:
        """No write by the operator in the namespace for two resync intervals past the time
        it trusts its memory of its own writes: a child it cannot see (its watch refused)
        is applied again within that window, so the step fails for the right reason."""
        before = operator_writes(self.cluster, self.namespace)
        time.sleep(2 * RESYNC_SECONDS + SCALE_SETTLE_SECONDS)
        return operator_writes(self.cluster, self.namespace) == before

    def sized(self, pool_name: str, replicas: int) -> bool:
        """The pool's Deployment at ``replicas``, its pods made, its status saying so."""
        dep = self.deployments().get(f"mm-{pool_name}")
        return bool(dep and dep["spec"]["replicas"] == replicas
                    and len(self.pods(pool_name)) == replicas
                    and self.pools().get(pool_name, {}).get("replicas") == replicas)


@dataclass(frozen=True)
class Step:
    name: str
    act: Callable[[Scene], object]
    done: Callable[[Scene], bool]


STEPS = (
    Step("children, status and events",
         lambda s: apply(s.cluster, s.namespace, broker_secret(s.redis_url), metamapper(
             pool("default", ["default", "checks"], 1, 4),
             pool("revisioner", ["revisioner"], 0, 3), network_policy=True)),
         lambda s: set(s.deployments()) == {"mm-default", "mm-revisioner"}
         and get(s.cluster, s.namespace, "configmap", "mm-celery") is not None
         and s.names("poddisruptionbudgets") == {"mm-default", "mm-revisioner"}
         and s.names("networkpolicies") == {"mm-pods"}
         and [entry.get("backlog") for entry in s.pools().values()] == [0, 0]
         and s.named("Created") == 6 and s.reasons().count("Created") == 1),
    # 7 messages, 3 tasks per pod: 3 pods.
    Step("scale-up",
         lambda s: push(s.redis_url, 7),
         lambda s: s.sized("default", 3) and s.pools()["default"].get("backlog") == 7
         and "ScaledUp" in s.reasons()),
    # The drained pods are annotated (a refused patch would hold the pool at 3).
    Step("scale-down, drained pods only",
         lambda s: redis.Redis.from_url(s.redis_url).delete("default"),
         lambda s: s.sized("default", 1) and "ScaledDown" in s.reasons()),
    # The same burst again: its events repeat earlier ones and are counted in them (patch).
    Step("the same scale-up again, its event counted",
         lambda s: push(s.redis_url, 7),
         lambda s: s.sized("default", 3) and s.most_counted() >= 2),
    Step("scale-down again",
         lambda s: redis.Redis.from_url(s.redis_url).delete("default"),
         lambda s: s.sized("default", 1)),
    # Flower's Service, and the pod watch that lifts a Standalone scheduler pod's gate.
    Step("Flower and a Standalone scheduler",
         lambda s: apply(s.cluster, s.namespace, FLOWER_SECRET, metamapper(
             pool("default", ["default", "checks"], 1, 4),
             pool("revisioner", ["revisioner"], 0, 3),
             flower={"enabled": True, "basicAuthSecretRef": {"name": "flower"}},
             scheduler={"mode": "Standalone"})),
         lambda s: get(s.cluster, s.namespace, "service", "mm-flower") is not None
         and {"mm-flower", "mm-scheduler"} <= set(s.deployments()) and scheduler_ungated(s)),
    Step("pool removed, bounds changed, Flower and the scheduler off",
         lambda s: apply(s.cluster, s.namespace, metamapper(
             pool("default", ["default", "checks"], 2, 5))),
         lambda s: set(s.deployments()) == {"mm-default"} and s.sized("default", 2)
         and s.names("poddisruptionbudgets") == {"mm-default"}
         and s.names("networkpolicies") == set()
         and list(s.pools()) == ["default"] and s.named("Deleted") >= 3
         and get(s.cluster, s.namespace, "service", "mm-flower") is None),
    Step("at rest", lambda s: None, Scene.at_rest),
    # Drift at rest that only the ConfigMap watch reveals (the resync skips objects whose
    # indexes did not change, so without the watch the ConfigMap would never come back).
    Step("a deleted ConfigMap re-created at rest",
         lambda s: s.cluster.kubectl("delete", "configmap", "-n", s.namespace, "mm-celery"),
         lambda s: get(s.cluster, s.namespace, "configmap", "mm-celery") is not None),
    # A Deployment missing at a resync: before re-creating it, the operator reads the
    # object (get), which may have been deleted while its watch was down.
    Step("a deleted Deployment re-created at rest",
         lambda s: s.cluster.kubectl("delete", "deployment", "-n", s.namespace, "mm-default"),
         lambda s: "mm-default" in s.deployments()),
)


def run_steps(scene: Scene, refused: Callable[[], bool]) -> list[str]:
    """Run the steps in order; the names of those that converged, up to the first that did
    not: within STEP_TIMEOUT, or AFTER_REFUSAL once ``refused()`` (checked while waiting)."""
    converged: list[str] = []
    for step in STEPS:
        step.act(scene)
        deadline = time.monotonic() + STEP_TIMEOUT
        refusal_seen = False
        while not step.done(scene):
            if not refusal_seen and refused():
                refusal_seen = True
                deadline = time.monotonic() + AFTER_REFUSAL
            if time.monotonic() > deadline:
                return converged
            time.sleep(0.2)
        converged.append(step.name)
    return converged


# --- the operator with the chart's access, or with one verb less ----------------------


def refusals(log: str) -> set[tuple[str, str, str]]:
    """(verb, resource, API group) of every request the operator logged a 403 for."""
    return {(match[1], match[2], match[3]) for match in REFUSAL.finditer(log)}


def revoke(access: ChartAccess, rule: Rule, verb: str) -> None:
    """Take ``verb`` out of ``rule`` in the release's (Cluster)Role that has it (the rule
    goes when it had no other verb), and wait until the apiserver refuses it."""
    (role,) = [role for role in access.roles() if rule in rules_of(role)]
    kept = []
    for entry in role["rules"]:
        (granted,) = rules_of({"rules": [entry]})
        verbs = [v for v in granted.verbs if (granted, v) != (rule, verb)]
        if verbs:
            kept.append({**entry, "verbs": verbs})
    assert sum(map(len, (e["verbs"] for e in kept))) == sum(
        len(e["verbs"]) for e in role["rules"]) - 1, f"{rule} is not in {role['rules']}"
    access.apply_roles([{**role, "rules": kept}])
    name = access.lease.partition("/")[2] if rule.named else ""
    wait_until(lambda: not access.client.allowed(verb, rule.group, rule.resource,
                                                 access.namespace, name),
               what=f"{verb} {rule.id} to be revoked")


@dataclass(frozen=True)
class Outcome:
    converged: list[str]
    log: str


def run_operator(cluster: Cluster, redis_url: str, workdir: Path,
                 revoked: Revoked | None = None) -> Outcome:
    """The scenario in a fresh namespace, with the operator (watching every namespace)
    authenticated as the chart's ServiceAccount of a release of its own, less ``revoked``.
    The wait for a stalled step is cut short once the operator logs a 403 for ``revoked``
    (for anything, without ``revoked``)."""
    namespace = unique("rbac")
    cluster.kubectl("create", "namespace", namespace)
    access = install_chart_access(cluster, namespace, {}, workdir / "kubeconfig",
                                  release=namespace)
    try:
        if revoked:
            revoke(access, *revoked)
        operator = start_operator(access.kubeconfig, workdir / "operator.log",
                                  f"--lease={access.lease}", "--lease-duration=6")
        wanted = revoked and (revoked[1], revoked[0].resource, revoked[0].group)

        def refused() -> bool:
            found = refusals(operator.output())
            return wanted in found if wanted else bool(found)

        try:
            converged = run_steps(Scene(cluster, namespace, redis_url), refused)
        finally:
            operator.stop()
        return Outcome(converged, operator.output())
    finally:
        # Gone before the next operator starts, so that it sees only its own scenario.
        cluster.kubectl("delete", "metamapper", "--all", "-n", namespace)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        uninstall_chart_access(access)


def test_with_the_charts_rules_the_scenario_converges_and_nothing_is_refused(
        lone_cluster: Cluster, redis_url: str, tmp_path: Path) -> None:
    outcome = run_operator(lone_cluster, redis_url, tmp_path)
    assert outcome.converged == [step.name for step in STEPS], outcome.log[-5000:]
    assert [line for line in outcome.log.splitlines() if FORBIDDEN.search(line)] == []
    assert "Traceback" not in outcome.log, outcome.log[-5000:]


# --- the matrix, several cases at a time -------------------------------------------

# Control planes the matrix runs on at once. Each case's operator watches every namespace,
# so a plane holds one case at a time; a case spends most of its time waiting (for a step,
# or AFTER_REFUSAL once refused), so three planes make the matrix about three times faster
# on two cores.
LANES = 3
# How long a test waits for its case, which may be queued behind others.
CASE_TIMEOUT = 900.0


def case_id(revoked: Revoked) -> str:
    rule, verb = revoked
    return f"{rule.id}-{verb}"


@dataclass
class Matrix:
    """Every selected case of the matrix, started when the first of them runs: ``LANES``
    lanes (``lone_cluster`` and control planes of their own) take cases from one queue in
    turn, each in a namespace, Redis database and workdir of its own; each test waits for
    the outcome of its own case."""

    lone: Cluster
    workdir: Path
    cases: queue.Queue[Revoked] = field(default_factory=queue.Queue)
    outcomes: dict[str, Future[Outcome]] = field(default_factory=dict)

    def run(self, lanes: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self._lane, args=(number,), daemon=True)
                   for number in range(lanes)]
        for thread in threads:
            thread.start()
        return threads

    def _lane(self, number: int) -> None:
        plane: AbstractContextManager[Cluster] = (nullcontext(self.lone) if number == 0
                 else lone_control_plane(self.workdir / f"plane-{number}"))
        try:
            with plane as cluster:
                while (revoked := self._next()) is not None:
                    self._run_case(cluster, revoked)
        except BaseException as err:  # a plane that did not start: fail what is left
            while (revoked := self._next()) is not None:
                self.outcomes[case_id(revoked)].set_exception(err)

    def _next(self) -> Revoked | None:
        """The next case still wanted, marked running; None when there is none."""
        while True:
            try:
                revoked = self.cases.get_nowait()
            except queue.Empty:
                return None
            if self.outcomes[case_id(revoked)].set_running_or_notify_cancel():
                return revoked

    def _run_case(self, cluster: Cluster, revoked: Revoked) -> None:
        outcome = self.outcomes[case_id(revoked)]
        try:
            with claimed_redis_database() as redis_url:
                workdir = self.workdir / case_id(revoked).replace("/", "-")
                workdir.mkdir()
                outcome.set_result(run_operator(cluster, redis_url, workdir, revoked))
        except BaseException as err:
            outcome.set_exception(err)

    def cancel(self) -> None:
        for outcome in self.outcomes.values():
            outcome.cancel()


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest, lone_cluster: Cluster,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    """The matrix of the cases this session selected, running on ``LANES`` planes."""
    selected = [item.callspec.params["revoked"] for item in request.session.items
                if item.module is request.module and "revoked" in getattr(
                    getattr(item, "callspec", None), "params", {})]
    runs = Matrix(lone_cluster, tmp_path_factory.mktemp("rbac-matrix"))
    for revoked in selected:
        runs.outcomes[case_id(revoked)] = Future()
        runs.cases.put(revoked)
    lanes = runs.run(min(LANES, len(selected)))
    try:
        yield runs
    finally:
        runs.cancel()
        for lane in lanes:
            lane.join()


def test_without_any_one_verb_the_operator_is_refused_and_the_scenario_stalls(
        matrix: Matrix, revoked: Revoked) -> None:
    rule, verb = revoked
    outcome = matrix.outcomes[case_id(revoked)].result(timeout=CASE_TIMEOUT)
    found = refusals(outcome.log)
    assert found == {(verb, rule.resource, rule.group)}, (
        f"expected the operator to be refused {verb} on {rule.id} (and nothing else); it was "
        f"refused {sorted(found) or 'nothing'}; steps that converged: {outcome.converged}\n"
        + outcome.log[-5000:])
    assert len(outcome.converged) < len(STEPS), (
        f"{verb} on {rule.id} was refused, yet the scenario converged: the verb is not needed")
