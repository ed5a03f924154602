"""The soak's recovery rule (whole: pools within bounds and ready, none draining, the
earlier backlog done) and its table per fault kind."""

from __future__ import annotations

from _chaos_ledger import Fault, Run, Task
from _chaos_report import NO_FAULT, PoolState, Snapshot, recovered_at, rows, shortfalls, verdict


def pool(replicas: int = 2, ready: int = 2, draining: tuple[str, ...] = ()) -> PoolState:
    return PoolState("redis", "fast", 1, 4, replicas, ready, draining)


def test_whole_only_with_every_pool_in_bounds_ready_undrained_and_the_backlog_done() -> None:
    assert shortfalls(Snapshot(0, (pool(),), 0)) == []
    assert shortfalls(Snapshot(0, (pool(5, 5),), 0)) == [
        "redis/fast: 5 replicas outside [1, 4]"]
    assert shortfalls(Snapshot(0, (pool(2, 1),), 0)) == ["redis/fast: 1/2 ready"]
    assert shortfalls(Snapshot(0, (pool(draining=("p",)),), 0)) == [
        "redis/fast: draining p"]
    assert shortfalls(Snapshot(0, (pool(),), 3)) == ["3 earlier tasks unfinished"]


def test_recovery_is_the_first_whole_snapshot_once_the_fault_ended() -> None:
    snapshots = [Snapshot(1, (pool(),), 0), Snapshot(2, (pool(2, 1),), 0),
                 Snapshot(3, (pool(),), 1), Snapshot(4, (pool(),), 0)]
    assert recovered_at(1.5, snapshots) == 4
    assert recovered_at(0.5, snapshots) == 1
    assert recovered_at(5, snapshots) is None


def test_the_table_counts_findings_under_the_fault_they_are_blamed_on() -> None:
    kills = [Fault(i, "pod-sigkill", "redis", frozenset({"a"}), 10.0 * i, 10.0 * i,
                   10.0 * i + 2 + i) for i in range(1, 4)]
    restart = Fault(4, "kubelet-restart", "redis", frozenset(), 100, 101, None)
    faults = [*kills, restart]
    tasks = [
        Task("explained", "redis", 9, (Run(9, "a", 1, None), Run(12, "b", 2, 13))),
        Task("twice", "redis", 95, (Run(96, "b", 1, 97), Run(102, "b", 2, 103))),
        Task("lost", "redis", 105, ()),
        Task("early", "redis", 1, (Run(1, "a", 1, 2), Run(3, "a", 1, 4))),
        Task("fine", "redis", 50, (Run(50, "a", 1, 51),)),
    ]
    table = {row.kind: row for row in rows(faults, tasks)}
    assert list(table) == ["pod-sigkill", "kubelet-restart", NO_FAULT]
    sigkill = table["pod-sigkill"]
    assert (sigkill.faults, sigkill.not_recovered, sigkill.lost, sigkill.ran_twice,
            sigkill.unexplained, sigkill.interrupted) == (3, 0, 0, 0, 0, 1)
    assert sigkill.recovery == (3.0, 4.0, 5.0)
    assert sigkill.cells()[-3:] == ["4.0", "5.0", "5.0"]
    kubelet = table["kubelet-restart"]
    assert (kubelet.faults, kubelet.not_recovered, kubelet.lost, kubelet.ran_twice,
            kubelet.unexplained) == (1, 1, 1, 1, 1)
    assert kubelet.cells()[-3:] == ["-", "-", "-"]
    assert (table[NO_FAULT].ran_twice, table[NO_FAULT].unexplained) == (1, 1)

    found = verdict(faults, tasks)
    assert not found.ok
    assert (found.lost, found.unexplained, found.not_recovered) == (
        ("lost",), ("twice", "early"), (4,))
    assert verdict(kills, tasks[:1] + tasks[-1:]).ok
