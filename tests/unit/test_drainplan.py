"""Drain before delete, the pure decisions: whom to retire, when a drain is over, and when
lowering the replicas removes exactly the drained pods."""

from __future__ import annotations

from metamapper_operator.autoscale.drainplan import (
    TEMPLATE_HASH,
    Draining,
    DrainRecord,
    Load,
    Review,
    WorkerPod,
    drain_timeout,
    exact_removal,
    hostname,
    pick,
    review,
)


def workers(*names: str) -> list[WorkerPod]:
    return [WorkerPod(name) for name in names]


def test_idle_workers_first_then_the_least_loaded_then_the_silent() -> None:
    loads = {"a": Load(active=2), "b": Load(), "c": Load(reserved=1), "d": Load()}
    assert pick(workers("a", "b", "c", "d", "e"), loads, 3) == ["b", "d", "c"]
    assert pick(workers("a", "e"), loads, 2) == ["a", "e"]
    assert pick(workers("a"), loads, 0) == []


def test_among_idle_pods_those_the_replicaset_removes_first_are_picked_first() -> None:
    """A pod that cannot start (Pending: no room on the nodes) holds nothing: retiring the
    running workers instead would leave it as the pool's only pod, and the ReplicaSet
    controller would remove it before them anyway."""
    pods = [WorkerPod("a"), WorkerPod("b"), WorkerPod("c", ready=False),
            WorkerPod("z", phase="Pending", ready=False)]
    idle = {pod.name: Load() for pod in pods}
    assert pick(pods, idle, 2) == ["z", "c"]
    assert pick(pods, idle, 3) == ["z", "c", "a"]
    # Less work to wait for still comes first.
    assert pick(pods, {**idle, "z": Load(), "c": Load(active=1)}, 2) == ["z", "a"]


def test_a_load_counts_running_prefetched_and_eta_tasks() -> None:
    assert Load(active=1, reserved=2, scheduled=3).total == 6
    assert Load(active=1, reserved=2, scheduled=3).running == 3


def test_workers_holding_only_eta_tasks_come_after_idle_ones_and_before_running_ones(
        ) -> None:
    """ETA tasks go back to the broker when the worker stops; a running task must end."""
    loads = {"eta": Load(scheduled=3), "eta-1": Load(scheduled=1), "run": Load(active=1),
             "idle": Load()}
    assert pick(workers("eta", "eta-1", "run", "idle"), loads, 4) == [
        "idle", "eta-1", "eta", "run"]


def test_review_sorts_drains_by_what_their_workers_hold() -> None:
    drains = [Draining("done", 0, 60), Draining("busy", 0, 60), Draining("late", 0, 30),
              Draining("silent", 0, 60), Draining("gone-quiet", 0, 30)]
    loads = {"done": Load(), "busy": Load(active=1), "late": Load(reserved=1)}
    assert review(drains, loads, 30) == Review(
        drained=("done",), timed_out=(drains[2], drains[4]),
        waiting=(drains[1], drains[3]))


def test_a_drain_whose_worker_holds_only_eta_tasks_is_over() -> None:
    """However far their ETA: the warm shutdown gives them back to the broker."""
    drains = [Draining("eta", 0, 60), Draining("eta-and-run", 0, 60)]
    loads = {"eta": Load(scheduled=2), "eta-and-run": Load(active=1, scheduled=1)}
    assert review(drains, loads, 1) == Review(drained=("eta",), waiting=(drains[1],))


def test_a_drain_record_says_when_it_started_and_which_queues_it_stopped() -> None:
    record = DrainRecord(1_800_000_000.5, ("default", "checks"))
    assert DrainRecord.decode(record.encode(), ("other",)) == record


def test_a_mark_that_is_not_a_record_is_a_drain_of_the_pools_queues_of_unknown_age() -> None:
    for text in ("true", "", "{", "[1]", '{"since": "x", "queues": [1]}', '{"queues": []}',
                 '{"since": true}'):
        assert DrainRecord.decode(text, ("default",)) == DrainRecord(None, ("default",)), text


def test_a_drain_has_what_its_start_leaves_of_the_timeout() -> None:
    assert DrainRecord(100.0, ()).remaining(60, 130) == 30
    assert DrainRecord(100.0, ()).remaining(60, 200) == 0
    assert DrainRecord(100.0, ()).remaining(60, 90) == 60     # a clock behind the writer's
    assert DrainRecord(None, ()).remaining(60, 200) == 60


def test_the_drain_timeout_is_the_grace_period() -> None:
    assert drain_timeout(90) == 90.0


def test_the_hostname_is_the_pool_at_the_pod() -> None:
    assert hostname("default", "mm-default-abc") == "default@mm-default-abc"


def pods(*specs: WorkerPod) -> list[WorkerPod]:
    return list(specs)


def test_exact_removal_when_the_drained_rank_no_higher_than_any_staying_pod() -> None:
    ready = pods(WorkerPod("a"), WorkerPod("b"), WorkerPod("c"))
    assert exact_removal(ready, ["a"], 3) is None
    # A drained pod that is not ready or pending ranks lower still: fine.
    assert exact_removal(pods(WorkerPod("a", ready=False), WorkerPod("b")), ["a"], 2) is None
    assert exact_removal(pods(WorkerPod("a", phase="Pending", assigned=False),
                              WorkerPod("b")), ["a"], 2) is None


def test_no_exact_removal_while_a_staying_pod_ranks_lower() -> None:
    for staying in (WorkerPod("b", ready=False), WorkerPod("b", phase="Pending"),
                    WorkerPod("b", assigned=False), WorkerPod("b", phase="Unknown")):
        why = exact_removal(pods(WorkerPod("a"), staying), ["a"], 2)
        assert why and "pod b" in why, staying


def test_evicted_pods_are_not_counted_as_the_replicaset_controller_does_not() -> None:
    evicted = WorkerPod("e", phase="Failed", ready=False)
    assert evicted.ended and not WorkerPod("a").ended
    assert exact_removal(pods(WorkerPod("a"), evicted, WorkerPod("b")), ["a"], 2) is None
    assert "gone" in (exact_removal(pods(evicted, WorkerPod("b")), ["e"], 1) or "")


def test_no_exact_removal_during_a_rollout_or_with_pods_missing() -> None:
    mixed = pods(WorkerPod("a", labels={TEMPLATE_HASH: "1"}),
                 WorkerPod("b", labels={TEMPLATE_HASH: "2"}))
    assert "rollout" in (exact_removal(mixed, ["a"], 2) or "")
    assert "starting or stopping" in (exact_removal(pods(WorkerPod("a")), ["a"], 2) or "")
    assert "gone" in (exact_removal(pods(WorkerPod("b")), ["a"], 1) or "")
