"""The soak's fault schedule: seeded, every kind in each round, holds on the right side
of the visibility timeout and the lease."""

from __future__ import annotations

import pytest

from _chaos_faults import CATALOGUE, KINDS, PlannedFault, Timing, round_length, schedule

TIMING = Timing(visibility_timeout=40.0, lease_seconds=15.0)
ALL = [kind.name for kind in CATALOGUE]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    first = schedule(7, 30, ALL, ["redis", "rabbitmq"], TIMING)
    assert first == schedule(7, 30, ALL, ["redis", "rabbitmq"], TIMING)
    assert first != schedule(8, 30, ALL, ["redis", "rabbitmq"], TIMING)


def test_each_round_holds_every_kind_once() -> None:
    planned = schedule(3, 3 * len(ALL), ALL, ["redis"], TIMING)
    for start in range(0, len(planned), len(ALL)):
        assert sorted(f.kind for f in planned[start:start + len(ALL)]) == sorted(ALL)
    assert [f.index for f in planned] == list(range(len(planned)))


def test_partitions_and_pauses_last_on_their_side_of_the_timeouts() -> None:
    planned = schedule(11, 40 * len(ALL), ALL, ["redis", "rabbitmq"], TIMING)
    holds = {kind: [f.hold for f in planned if f.kind == kind] for kind in KINDS}
    assert all(0 < h < TIMING.visibility_timeout for h in holds["partition-short"])
    assert all(h > TIMING.visibility_timeout for h in holds["partition-long"])
    assert all(h > TIMING.lease_seconds for h in holds["operator-pause"])
    assert all(h == 0 for h in holds["pod-sigkill"] + holds["broker-restart"])
    assert all(f.burst for f in planned if f.kind == "helm-upgrade")
    assert {f.broker for f in planned} == {"redis", "rabbitmq"}


def test_only_the_chosen_kinds_and_known_ones() -> None:
    planned = schedule(1, 10, ["pod-sigkill", "dns-outage"], ["rabbitmq"], TIMING)
    assert {f.kind for f in planned} == {"pod-sigkill", "dns-outage"}
    with pytest.raises(ValueError, match="unknown fault kinds: pod-melt"):
        schedule(1, 10, ["pod-melt"], ["redis"], TIMING)
    with pytest.raises(ValueError, match="unknown fault kinds: pool-rollout"):
        schedule(1, 10, ["pool-rollout"], ["redis"], TIMING)   # the upgrade's, not injected


def test_the_target_is_picked_over_the_sorted_pods() -> None:
    fault = PlannedFault(0, "pod-sigkill", "redis", pick=0.5, hold=0, pause=1, burst=False)
    assert fault.target(["c", "a", "b", "d"]) == "c"
    with pytest.raises(ValueError):
        fault.target([])


def test_each_round_restarts_every_broker_and_hits_one_fleet_with_each_other_kind() -> None:
    """A broker restart is a fault of that broker: a round that drew one fleet for it
    left the other broker never restarted (seed 2 restarted Redis only, in its first 60)."""
    brokers = ["redis", "rabbitmq"]
    per_round = round_length(ALL, brokers)
    assert per_round == len(ALL) + 1   # broker-restart once per broker
    for seed in (1, 2, 20261206):
        planned = schedule(seed, 3 * per_round, ALL, brokers, TIMING)
        for start in range(0, len(planned), per_round):
            this = planned[start:start + per_round]
            assert sorted(f.broker for f in this if f.kind == "broker-restart") == sorted(
                brokers)
            assert sorted({f.kind for f in this}) == sorted(ALL)
            assert len([f for f in this if f.kind != "broker-restart"]) == len(ALL) - 1
