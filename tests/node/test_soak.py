"""An upgrade from the previous release, then every fault kind once, on one stack.

The stack of ``bench/chaos.py`` (a control plane, the node, the cluster DNS, the operator
in two pods from its chart; ``fleet-redis`` on a Redis and ``fleet-rabbitmq`` on a RabbitMQ
node of the run's own, two pools each, a steady stream of tasks with unique ids) starts
under the previous release's operator: 0.1.0, named by its commit (tags may not reach
every clone), its chart and CRD from ``git archive`` of it, its operator image built from
it (``devenv.releases``). Starting the stack takes minutes, so both tests share it, in
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
stop: 20 to 32 minutes in all.

Run alone: ``.venv/bin/pytest tests/node/test_soak.py`` (as ``make test`` runs the suite:
with ``make tools`` and ``make images`` done, and nothing else using the node).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _chaos_faults import Timing, round_length, schedule
from _chaos_report import verdict
from _chaos_upgrade import Upgrade, upgrade
from _chaos_upgrade_checks import (
    fleet_findings,
    pool_findings,
    rollouts_the_notes_rule_out,
    rolls_from_0_1_0,
)
from chaos import ALL_KINDS, LEASE_SECONDS, VISIBILITY_SECONDS, Soak, signals_held
from devenv import releases

SEED = 20261206
BROKERS = ("redis", "rabbitmq")
PAUSES = (2.0, 5.0)   # seconds between a fault's recovery and the next fault


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    """The soak's stack, started under the previous release; stopped at the end (the
    short soak stops it first, to see what is left behind)."""
    root = tmp_path_factory.mktemp("soak")
    previous = releases.prepare(releases.PREVIOUS, root / "previous")
    soak = Soak(root, SEED, BROKERS, ALL_KINDS, "aof", rate=1.0, pauses=PAUSES,
                operator=previous)
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


@pytest.mark.timeout(1800)
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


@pytest.mark.timeout(2700)
def test_every_fault_once_after_the_upgrade_loses_no_task_and_leaves_nothing_behind(
        run: Soak, upgraded: Upgrade) -> None:
    count = round_length(ALL_KINDS, BROKERS)
    planned = schedule(SEED, count, ALL_KINDS, BROKERS,
                       Timing(VISIBILITY_SECONDS, LEASE_SECONDS, PAUSES))
    outcome = run.run(None, count)
    with signals_held():
        left_behind = run.stop()
    injected = [f for f in outcome.faults if f not in upgraded.faults]
    assert outcome.failed_injections == ()
    assert [(f.kind, f.broker) for f in injected] == [(p.kind, p.broker) for p in planned]
    assert {f.kind for f in injected} == set(ALL_KINDS)
    assert sorted(f.broker for f in injected if f.kind == "broker-restart") == sorted(BROKERS)
    assert outcome.verdict.tasks > len(upgraded.tasks)
    assert outcome.verdict.lost == ()
    assert outcome.verdict.unexplained == ()
    assert outcome.verdict.not_recovered == ()
    assert left_behind == ()
