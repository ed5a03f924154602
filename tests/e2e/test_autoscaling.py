"""A burst grows the pool and every task runs once; scale-down drains workers first and
removes exactly the drained pods; a drain that outlasts the grace period gives up and
the worker keeps its task."""

from __future__ import annotations

from devenv.waiting import wait_until
from devenv.workload import Tally, records
from metamapper_operator.autoscale.drainplan import DRAINED_COST
from tests.e2e.conftest import WINDOW_SECONDS, Fleets, PodsWatch, ReplicasWatch
from tests.helpers import wait_for_event


def test_burst_scales_up_runs_every_task_once_then_scales_down(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("burst", redis_url)
    fleet.apply({"concurrency": 2})
    fleet.wait_for_workers(1)
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)
    ids = fleet.send(30, 1.0)   # 30 waiting / 2 per pod -> 15 pods, capped at 4

    wait_until(lambda: fleet.replicas() == 4, timeout=15, what="the pool at maxReplicas")
    # The autoscaler may look while the burst is still being sent: the last step is to 4.
    wait_for_event(fleet.events, "ScaledUp", "-> 4 pods")
    result = fleet.wait_done(ids)
    wait_until(lambda: fleet.replicas() == 1, timeout=WINDOW_SECONDS + 20,
               what="the pool back at minReplicas after the window")
    replicas.stop_once(1)

    assert result == Tally(sent=30, done=30, lost=0, duplicated=0, interrupted=0)
    assert fleet.tally(ids) == result   # nothing ran again during the scale-down
    ran_on = {records(fleet.records, "done", i)[0].pod for i in ids}
    assert len(ran_on) > 1, ran_on      # the new pods took part
    wait_for_event(fleet.events, "ScaledDown")
    history = replicas.values()
    assert history[0] == 1 and max(history) == 4 and history[-1] == 1, history


def test_scale_down_removes_idle_pods_and_interrupts_no_running_task(
        fleets: Fleets, redis_url: str) -> None:
    """One long task and three short ones on single-process workers, one task per pod:
    four pods. When the short ones are done the backlog is the long task in flight, so
    after the window the pool shrinks to one: the pod running the long task must stay.

    The long task outlasts the new pods' start (up to about 15 s on a loaded machine),
    the short tasks, the window and the shrink's steps (one a cycle, 4 -> 3 -> 2 -> 1):
    once it is done, every pod is idle and any of them may stay."""
    fleet = fleets("drain", redis_url)
    fleet.apply({"concurrency": 1})
    fleet.wait_for_workers(1)
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)
    pods = PodsWatch(fleet.stack, fleet.name)
    (long,) = fleet.send(1, 45.0)
    short = fleet.send(3, 1.0)

    wait_until(lambda: fleet.replicas() == 4, timeout=15, what="4 pods")
    wait_until(lambda: fleet.replicas() == 1, timeout=60, what="the pool shrunk to 1")

    def left() -> list[str]:
        names = [p["metadata"]["name"] for p in fleet.pods()]
        return names if len(names) == 1 else []

    (survivor,) = wait_until(left, what="3 pods gone")
    result = fleet.wait_done([long, *short], timeout=60)
    replicas.stop()
    pods.stop()

    assert result == Tally(sent=4, done=4, lost=0, duplicated=0, interrupted=0)
    (ran,) = records(fleet.records, "started", long)
    (finished,) = records(fleet.records, "done", long)
    at_one = [at for at, n in replicas.changes() if n == 1][-1]
    assert at_one < finished.at, "the pool reached one pod only after the long task was done"
    assert survivor == ran.pod
    seen = pods.pods()
    removed = {name: pod.deleted_at for name, pod in seen.items()
               if pod.deleted_at is not None}
    assert set(removed) == set(seen) - {survivor}
    assert len(removed) == 3
    # Drained when removed: the lowest deletion cost, no task of this test running.
    for name, deleted_at in removed.items():
        assert seen[name].cost == str(DRAINED_COST), (name, seen[name])
        for task_id in [long, *short]:
            for start, done in zip(records(fleet.records, "started", task_id),
                                   records(fleet.records, "done", task_id), strict=True):
                assert not (start.pod == name and start.at < deleted_at < done.at)
    assert seen[survivor].cost == "", seen   # never drained: busy with the long task


def test_a_drain_that_times_out_keeps_the_worker_and_its_task(
        fleets: Fleets, redis_url: str) -> None:
    """Two pods each busy with a task longer than the grace period; in-flight messages
    not counted, so once minReplicas drops to 1 the pool wants one pod. The drain of one
    busy worker times out after the grace period: reported, and the worker consumes again
    instead of being killed. Once the tasks are done the pool shrinks, and nothing ran
    twice or was cut."""
    fleet = fleets("timeout", redis_url)
    pool = {"concurrency": 1, "terminationGracePeriodSeconds": 5, "minReplicas": 2,
            "autoscaling": {"countInFlight": False}}
    fleet.apply(pool)
    fleet.wait_for_workers(2)
    ids = fleet.send(2, 25.0)
    wait_until(lambda: fleet.tally(ids).interrupted == 2, timeout=30,
               what="both tasks running")   # started, not done yet
    fleet.apply({**pool, "minReplicas": 1})   # the pool now wants one pod
    timed_out = wait_until(lambda: fleet.events("DrainTimedOut"), timeout=30,
                           what="a DrainTimedOut event")
    assert "timed out after 5 s holding 1 tasks; consuming again" in timed_out[0]
    # The status of the cycle that posted the event is written after it.
    status = wait_until(lambda: (s := fleet.pool_status()).get("lastDrainTimeout") and s,
                        timeout=15, what="the timed-out drain in the status")
    assert "timed out" in status["lastDrainTimeout"]
    assert fleet.replicas() == 2          # nobody was removed mid-task
    result = fleet.wait_done(ids, timeout=60)
    wait_until(lambda: fleet.replicas() == 1, timeout=30, what="the pool shrunk to 1")
    assert result == Tally(sent=2, done=2, lost=0, duplicated=0, interrupted=0)
    assert fleet.tally(ids) == result
