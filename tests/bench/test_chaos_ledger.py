"""The soak's per-task ledger: runs paired from the records, and the invariant (lost, ran
twice, interrupted, each repeat explained by a fault that could have cut it off)."""

from __future__ import annotations

from _chaos_ledger import Fault, Run, Task, pair_runs
from devenv.workload import Record


def fault(kind: str, began: float, ended: float, broker: str = "redis",
          pods: frozenset[str] = frozenset()) -> Fault:
    return Fault(0, kind, broker, pods, began, ended, recovered=ended + 5)


def test_runs_pair_each_start_with_the_next_done_of_its_pod_and_process() -> None:
    runs = pair_runs(
        started=[Record(10, "a", 1), Record(20, "b", 7), Record(30, "b", 7)],
        done=[Record(35, "b", 7), Record(25, "b", 7)])
    assert runs == (Run(10, "a", 1, None), Run(20, "b", 7, 25), Run(30, "b", 7, 35))


def test_a_task_that_never_finished_is_lost_and_one_that_finished_twice_ran_twice() -> None:
    lost = Task("t1", "redis", 0, (Run(1, "a", 1, None),))
    twice = Task("t2", "redis", 0, (Run(1, "a", 1, 2), Run(3, "b", 2, 4)))
    fine = Task("t3", "redis", 0, (Run(1, "a", 1, 2),))
    assert (lost.lost, lost.ran_twice, lost.interrupted) == (True, False, True)
    assert (twice.lost, twice.ran_twice, twice.interrupted) == (False, True, False)
    assert (fine.lost, fine.ran_twice, fine.interrupted) == (False, False, False)
    assert not fine.unexplained([])


def test_a_repeat_is_explained_by_a_kill_of_the_pod_the_run_before_was_on() -> None:
    task = Task("t", "redis", 0, (Run(10, "a", 1, None), Run(50, "b", 2, 55)))
    kill_a = fault("pod-sigkill", 12, 12, pods=frozenset({"a"}))
    assert task.explanations([kill_a]) == [kill_a]
    assert not task.unexplained([kill_a])
    assert task.blamed([kill_a]) == kill_a


def test_a_repeat_after_a_kill_of_another_pod_or_fleet_or_time_is_unexplained() -> None:
    task = Task("t", "redis", 0, (Run(10, "a", 1, 20), Run(50, "b", 2, 55)))
    assert task.unexplained([fault("pod-sigkill", 12, 12, pods=frozenset({"b"}))])
    assert task.unexplained([fault("pod-sigkill", 12, 12, "rabbitmq", frozenset({"a"}))])
    assert task.unexplained([fault("pod-sigkill", 30, 30, pods=frozenset({"a"}))])
    # within the acknowledgement's slack after the run's end: the ack may have been cut
    assert not task.unexplained([fault("partition-short", 21, 30, pods=frozenset({"a"}))])


def test_faults_that_kill_nothing_explain_no_repeat_whatever_they_hit() -> None:
    task = Task("t", "redis", 0, (Run(10, "a", 1, None), Run(50, "b", 2, 55)))
    for kind in ("kubelet-restart", "operator-kill", "helm-upgrade", "dns-outage"):
        assert task.unexplained([fault(kind, 12, 20)])


def test_a_broker_restart_explains_the_repeats_of_its_own_fleet_only() -> None:
    task = Task("t", "redis", 0, (Run(10, "a", 1, None), Run(50, "b", 2, 55)))
    assert not task.unexplained([fault("broker-restart", 15, 16)])
    assert task.unexplained([fault("broker-restart", 15, 16, broker="rabbitmq")])


def test_a_lost_task_is_blamed_on_the_last_fault_before_its_last_trace() -> None:
    early = fault("dns-outage", 1, 5)
    late = fault("broker-restart", 40, 41)
    never_ran = Task("t", "redis", 30, ())
    assert never_ran.lost
    assert never_ran.blamed([early, late]) == early
    assert Task("u", "redis", 0.5, ()).blamed([early, late]) is None


def test_a_run_cut_off_is_explained_only_by_a_fault_that_could_cut_it_off() -> None:
    """An operator upgrade kills no run: a run cut off meanwhile, even one whose task ran
    again, is unexplained; a pool's rollout explains the runs on the pods it replaced."""
    task = Task("t", "redis", 0, (Run(10, "a", 1, None), Run(50, "b", 2, 55)))
    upgrade = fault("helm-upgrade", 5, 30)
    assert task.cut_off_unexplained([upgrade])
    assert not task.cut_off_unexplained([upgrade, fault("pool-rollout", 12, 30,
                                                        pods=frozenset({"a"}))])
    assert task.cut_off_unexplained([fault("pool-rollout", 12, 30, pods=frozenset({"b"}))])
    assert not Task("u", "redis", 0, (Run(10, "a", 1, 20),)).cut_off_unexplained([])
