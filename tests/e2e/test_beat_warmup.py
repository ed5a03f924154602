"""A wave fired by the fleet's own beat finds its pool already warm.

The fleet's beat sends one workload task every two minutes (a crontab, ``*/2 * * * *``) to
the queue of a pool whose minimum is 0; the worker image's own entries for that queue are
taken out (the heartbeat), so nothing else wakes the pool. The operator raises the pool's
minimum ``leadSeconds`` before the entry fires and lets the policy take it back to zero
after: a worker pod is Ready within the second the entry fires, and the task beat sends
starts within a second of its due time. (A condition's time is kept to the second, and a
worker takes tasks before its readiness probe counts it Ready: on a loaded machine, where
a pod takes about the whole lead to start, it may show Ready in the due second itself
while its worker has already taken the wave's task.) Beat sends an entry at its due time
or just after (Celery's crontab is due once its time has come), so the start measured
from the due time bounds the start measured from the send.
"""

from __future__ import annotations

import datetime
import time
import uuid

from devenv.waiting import wait_until
from devenv.workload import TASK, records
from tests.e2e.conftest import Fleet, Fleets, ReplicasWatch

ENTRY = "e2e-wave"
EVERY_SECONDS = 120
HOLD_SECONDS = 60          # autoscale/waves.py's HOLD_SECONDS
START_WITHIN_SECONDS = 1.0


QUEUE = "waves"  # the pool's own queue: the image's every-minute heartbeat goes to
                 # "default" and keeps that pool warm


def settings(task_id: str, record_url: str) -> dict[str, object]:
    return {"beat_schedule": {
        ENTRY: {"task": TASK, "schedule": "*/2 * * * *",
                "args": [task_id, 0.1, record_url], "options": {"queue": QUEUE}},
    }}


def parse_time(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC).timestamp()


def warm_up(fleet: Fleet) -> dict[str, object]:
    shown = fleet.pool_status().get("warmUp")
    return dict(shown) if isinstance(shown, dict) else {}


def ready_at(pod: dict[str, object]) -> float | None:
    """When the pod's Ready condition last turned True (None: not ready)."""
    status = pod.get("status")
    conditions = status.get("conditions") if isinstance(status, dict) else None
    for condition in conditions or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return parse_time(str(condition["lastTransitionTime"]))
    return None


def this_waves_rise(changes: list[tuple[float, int]], due: float) -> float | None:
    """When the pool rose for the wave due at ``due``: its first rise after it was last at
    zero before ``due``. The watch can begin just before the warm-up of the wave before
    (skipped when too close), so its rise and fall may be in ``changes`` too."""
    cold = [at for at, value in changes if value == 0 and at < due]
    since = max(cold, default=float("-inf"))
    return next((at for at, value in changes if value > 0 and at > since), None)


def test_a_beat_wave_finds_its_pool_warm_and_its_first_task_starts_at_once(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("waves", redis_url)
    task_id = uuid.uuid4().hex
    fleet.apply(pool={"queues": [QUEUE], "minReplicas": 0, "maxReplicas": 2},
                scheduler={"replicas": 1}, settings=settings(task_id, fleet.records))
    wait_until(lambda: fleet.pods("scheduler") and all(
        ready_at(p) is not None for p in fleet.pods("scheduler")), timeout=90,
        what="the scheduler's pod ready")

    # The status names the next wave; pick one far enough ahead that the pool is cold
    # (0 pods) until the warm-up raises it.
    shown = wait_until(lambda: warm_up(fleet).get("nextWave"), timeout=60,
                       what="the pool's next wave in status")
    assert isinstance(shown, dict) and shown["entry"] == ENTRY, warm_up(fleet)
    lead = float(str(warm_up(fleet)["leadSeconds"]))
    due = parse_time(str(shown["at"]))

    def cold_ahead_of_a_wave() -> bool:
        """The pool at 0 pods at least 5 s before a wave's warm-up (the wave after, when
        this one's is too close)."""
        nonlocal due
        while time.time() > due - lead - 5:
            due += EVERY_SECONDS
        return fleet.replicas() == 0

    wait_until(cold_ahead_of_a_wave, timeout=2 * EVERY_SECONDS, interval=0.5,
               what="the pool cold ahead of a wave")
    replicas = ReplicasWatch(fleet.stack, fleet.deployment)
    try:
        # Until the wave's task has started (and a little after, for the record).
        wait_until(lambda: any(r.at >= due - 0.5 for r in records(fleet.records, "started",
                                                                    task_id)),
                   timeout=due - time.time() + 30, interval=0.2,
                   what=f"the task of the wave due at {due:.0f}")
        started = min(r.at for r in records(fleet.records, "started", task_id)
                      if r.at >= due - 0.5)
        ready = [at for pod in fleet.live_pods() if (at := ready_at(pod)) is not None]
        print(f"wave due {due:.0f}: lead {lead:.0f} s; pod ready {due - min(ready):.1f} s "
              f"before; task started {started - due:.2f} s after its due time")
        assert min(ready) <= due, "no worker pod was Ready within the second the entry fired"
        assert started - due <= START_WITHIN_SECONDS

        # The warm-up let the pool go: back at zero before the next wave's warm-up.
        next_rise = due + EVERY_SECONDS - lead
        wait_until(lambda: fleet.replicas() == 0, timeout=next_rise - time.time(),
                   interval=0.5, what="the pool back at zero after the wave")
        changes = replicas.changes()
        raised = this_waves_rise(changes, due)
        assert raised is not None and raised < due - 1, changes
        assert all(at >= due + HOLD_SECONDS for at, value in changes
                   if value == 0 and at > raised), changes
    finally:
        replicas.stop()


def test_the_rise_for_a_wave_is_the_first_after_the_pool_was_last_cold() -> None:
    """A watch begun just before the warm-up of a wave skipped as too close sees that
    wave's rise and fall first (changes recorded in a run where the test took them for
    the next wave's)."""
    changes = [(6.8, 0), (9.3, 1), (105.4, 0), (129.5, 1), (225.6, 0)]
    assert this_waves_rise(changes, due=160) == 129.5
    assert this_waves_rise(changes, due=40) == 9.3
    assert this_waves_rise([(6.8, 0)], due=160) is None
