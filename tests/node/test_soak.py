"""An upgrade from the previous release, then every fault kind once, on one stack.

The stack of ``bench/chaos.py`` (a control plane, the node, the cluster DNS, the operator
in two pods from its chart; ``fleet-redis`` on a Redis and ``fleet-rabbitmq`` on a RabbitMQ
node of the run's own, two pools each, a steady stream of tasks with unique ids) starts
under the previous release's operator: 0.1.0, named by its commit (tags may not reach
every clone), its chart and CRD from ``git archive`` of it, its operator image built from
it (``devenv.releases``). The images are built first, in a test of their own (no wait
bounds a build). Starting the stack takes minutes, so the two tests after it share it, in
order:

1. **The upgrade** (``_chaos_upgrade``): in the middle of the stream and a burst on every
   fleet, the CRD applied server-side, then ``helm upgrade --reuse-values`` to this
   checkout's chart and operator image, exactly as docs/upgrading.md says. Nothing is
   lost; a task runs again or is cut off only on a pod a pool's rollout replaced; the
   Metamappers keep their specs (but for the fields the new CRD defaults) and
   generations; every pool carries this checkout's template, has rolled out by its
   RollingUpdate, and moved to a new ReplicaSet exactly when that template changed; and,
   as docs/upgrading.md says of an upgrade from 0.1.0 (the fleets' ``celery.settings``
   hold no ``"$remove"``), no pool's template changed, none moved to new pods and no
   ``pool-rollout`` was recorded; the fleet is whole again; this checkout's operator
   holds the Lease; and no Warning event since the upgrade began is unexplained
   (``_chaos_upgrade_checks``).
2. **The short soak** (``bench/chaos.py``'s run), under the upgraded operator: one round of
   the seeded schedule (every fault kind once, every broker restarted), each a few seconds
   after the fleet recovered from the one before. Nothing lost, every repeat explained by
   a fault that could cut the run before it off, every fault recovered from, every fault
   injected, nothing left behind once the stack is stopped. The figures stay in the
   benchmark; this asserts correctness only.

The fleets name their brokers' Services in full (``redis.chaos.svc.cluster.local``): the
operator of 0.1.0 looks a short name up in its own namespace, so under it fleets named by
short names are BrokerUnreachable and neither scale nor drain (``chaos.service_host``).

Duration, estimated (not measured yet): the previous operator image 2 to 4 minutes the
first time on a machine (its dependency layer on the bases this checkout's build made;
cached afterwards), the stack about 4 minutes, the brokers and the pools at their minimum
about a minute; the upgrade 3 to 5 minutes (45 s of stream under 0.1.0, the operator's
rollout, the fleet whole again, the stream's tasks finished); the soak 15 faults at 35 to
80 s each with their holds and recoveries (the benchmark's runs took 45 to 90 s a fault
with pauses 5 to 20 s; these are 2 to 5 s), 10 to 20 minutes, then the backlog and the
stop: 20 to 32 minutes in all. Each test's timeout is the sum of the waits it may go
through one after the other, with a margin, so that a slow run fails on the wait that
gave up, with its finding, not on pytest's timeout.

Run alone: ``make test-only PYTEST_ARGS="tests/node/test_soak.py"`` (with ``make tools``
and ``make images`` done, and nothing else using the node).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import yaml

from _chaos_faults import Timing, round_length, schedule
from _chaos_injectors import HELM_SECONDS, INJECT_LIMIT
from _chaos_report import verdict
from _chaos_upgrade import UPGRADE_LIMIT, Upgrade, upgrade
from _chaos_upgrade_checks import (
    fleet_findings,
    pool_findings,
    rollouts_the_notes_rule_out,
    rolls_from_0_1_0,
)
from chaos import (
    ALL_KINDS,
    DRAIN_LIMIT,
    LEASE_SECONDS,
    POOLS_LIMIT,
    RECOVERY_LIMIT,
    VISIBILITY_SECONDS,
    Soak,
    signals_held,
)
from devenv import containerd, images, releases
from devenv.releases import Release

SEED = 20261206
BROKERS = ("redis", "rabbitmq")
PAUSES = (2.0, 5.0)   # seconds between a fault's recovery and the next fault
PLANNED = schedule(SEED, round_length(ALL_KINDS, BROKERS), ALL_KINDS, BROKERS,
                   Timing(VISIBILITY_SECONDS, LEASE_SECONDS, PAUSES))

# The tests' timeouts: the waits each may go through, one after the other.
MARGIN = 1.25   # for what no wait bounds: the kubectl calls, the ledger's reads
#: The images' builds (bounded by no wait): 0.1.0's operator image, 2 to 4 minutes the
#: first time on a machine; this checkout's, far longer if ``make images`` was not run.
BUILD_TIMEOUT = 3600
#: devenv's own waits while the stack starts: kube-apiserver 90 s, the controller-manager
#: and the scheduler 60 s each, containerd 30 s, the node Ready 120 s, CoreDNS 120 s; then
#: the soak's Redis 30 s and RabbitMQ 120 s.
STACK_WAITS = 90 + 60 + 60 + 30 + 120 + 120 + 30 + 120
#: helm install (devenv.stack waits as long as the soak's helm) and the standby's upgrade,
#: then every pool at its minimum.
START_WAITS = STACK_WAITS + 2 * HELM_SECONDS + POOLS_LIMIT
#: Stopping: the node 120 s, the control plane's five daemons 15 s each, Redis 30 s,
#: RabbitMQ 60 s.
STOP_WAITS = 120 + 5 * 15 + 30 + 60
#: Each fault: its pause and hold, its injection, the fleet whole again; then the backlog.
SOAK_WAITS = sum(fault.pause + fault.hold + INJECT_LIMIT + RECOVERY_LIMIT
                 for fault in PLANNED) + DRAIN_LIMIT + STOP_WAITS


def budget(waits: float) -> int:
    return math.ceil(MARGIN * waits)


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """0.1.0, its operator image built and loaded into the node; this checkout's images
    built and loaded first, so that the stack finds every image ready."""
    images.build_all()
    return releases.prepare(releases.PREVIOUS, tmp_path_factory.mktemp("previous"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, previous: Release) -> Iterator[Soak]:
    """The soak's stack, started under the previous release; stopped at the end (the
    short soak stops it first, to see what is left behind)."""
    soak = Soak(tmp_path_factory.mktemp("soak"), SEED, BROKERS, ALL_KINDS, "aof", rate=1.0,
                pauses=PAUSES, operator=previous)
    try:
        soak.start()
        yield soak
    finally:
        with signals_held():
            soak.stop()


@pytest.fixture(scope="module")
def upgraded(run: Soak) -> Upgrade:
    """The upgrade to this checkout, done once for both tests."""
    return upgrade(run)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_previous_release_is_built_and_in_the_nodes_store(previous: Release) -> None:
    chart = yaml.safe_load((previous.chart / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == ("0.1.0", "0.1.0")
    assert containerd.has_image(previous.operator)


@pytest.mark.timeout(budget(START_WAITS + UPGRADE_LIMIT))
def test_an_upgrade_from_the_previous_release_loses_nothing_and_rolls_no_pod_needlessly(
        run: Soak, upgraded: Upgrade) -> None:
    assert run.stack.images is not None
    found = verdict(upgraded.faults, upgraded.tasks)
    assert found.tasks > 0
    assert found.lost == ()
    assert found.unexplained == ()
    assert [t.task_id for t in upgraded.tasks if t.cut_off_unexplained(upgraded.faults)] == []
    assert upgraded.recovered is not None
    assert fleet_findings(upgraded.fleets_before, upgraded.fleets_after,
                          upgraded.crd_spec_schema) == []
    assert pool_findings(upgraded.pools_before, upgraded.pools_after, upgraded.rendered) == []
    # docs/upgrading.md: from 0.1.0 no pool of these fleets rolls
    assert not any(rolls_from_0_1_0(seen.spec) for seen in upgraded.fleets_before.values())
    assert rollouts_the_notes_rule_out(upgraded.fleets_before, upgraded.pools_before,
                                       upgraded.pools_after, upgraded.faults) == []
    assert upgraded.leader_image == run.stack.images.operator
    assert upgraded.warnings == ()


@pytest.mark.timeout(budget(SOAK_WAITS))
def test_every_fault_once_after_the_upgrade_loses_no_task_and_leaves_nothing_behind(
        run: Soak, upgraded: Upgrade) -> None:
    outcome = run.run(None, len(PLANNED))
    with signals_held():
        left_behind = run.stop()
    injected = [f for f in outcome.faults if f not in upgraded.faults]
    assert outcome.failed_injections == ()
    assert [(f.kind, f.broker) for f in injected] == [(p.kind, p.broker) for p in PLANNED]
    assert {f.kind for f in injected} == set(ALL_KINDS)
    assert sorted(f.broker for f in injected if f.kind == "broker-restart") == sorted(BROKERS)
    assert outcome.verdict.tasks > len(upgraded.tasks)
    assert outcome.verdict.lost == ()
    assert outcome.verdict.unexplained == ()
    assert outcome.verdict.not_recovered == ()
    assert left_behind == ()
