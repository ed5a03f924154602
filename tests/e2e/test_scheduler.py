"""The scheduler: two single-beat pods, exactly one ``celery beat``, failover within the lock.

Beat sends a task every second to a queue no pool consumes, so its ticks pile up in
Redis: about one per second proves one beat (two would double it). The beat processes of
the fleet's pods are sampled from the host's /proc every 0.2 s: a container's processes
are the host's too, and their environment names their pod (``HOSTNAME``).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from devenv.waiting import wait_until
from tests.e2e.conftest import Fleet, Fleets, Sampler

TICKS = "e2e-ticks"
LOCK_SECONDS, HEARTBEAT_SECONDS = 3, 1
START_MARGIN_SECONDS = 3   # single-beat spawning `celery beat` on a busy machine
TICK_SETTINGS = {"beat_schedule": {"e2e-tick": {
    "task": "e2e.tick", "schedule": 1, "options": {"queue": TICKS}}}}


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    pod: str
    program: str   # "celery" or "single-beat"


def scheduler_processes(fleet: Fleet) -> list[Process]:
    """The single-beat and celery beat processes of the fleet's scheduler pods."""
    prefix = f"HOSTNAME={fleet.name}-scheduler-"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        pod = next((v.partition("=")[2] for v in environ if v.startswith(prefix)), None)
        program = next((Path(a).name for a in argv[:2]
                        if Path(a).name in ("celery", "single-beat")), None)
        if pod is None or program is None:
            continue
        found.append(Process(int(proc.name), ppid, pod, program))
    return found


def beats(fleet: Fleet) -> list[Process]:
    return [p for p in scheduler_processes(fleet) if p.program == "celery"]


def tick_rate(client: redis.Redis, seconds: float) -> float:
    """Ticks per second that beat queued over ``seconds``."""
    before, started = int(client.llen(TICKS)), time.monotonic()
    time.sleep(seconds)
    return (int(client.llen(TICKS)) - before) / (time.monotonic() - started)


def test_one_beat_runs_and_a_standby_takes_over_within_the_lock_time(
        fleets: Fleets, redis_url: str) -> None:
    fleet = fleets("beat", redis_url)
    fleet.apply(pool={"queues": ["e2e-idle"], "minReplicas": 0, "maxReplicas": 1},
                scheduler={"replicas": 2, "lock": {
                    "lockTimeSeconds": LOCK_SECONDS,
                    "heartbeatIntervalSeconds": HEARTBEAT_SECONDS}},
                settings=TICK_SETTINGS)
    client = redis.Redis.from_url(redis_url)
    running = Sampler(lambda: beats(fleet), 0.2)
    try:
        wait_until(lambda: len({p.pod for p in scheduler_processes(fleet)
                                if p.program == "single-beat"}) == 2,
                   timeout=60, what="single-beat in both scheduler pods")
        wait_until(lambda: client.llen(TICKS) >= 2, timeout=60, what="beat ticking")
        assert 0.5 <= tick_rate(client, 8) <= 1.5      # one beat, not two
        (active,) = beats(fleet)

        killed_at = time.time()
        os.kill(active.ppid, signal.SIGKILL)           # the single-beat running the beat
        took_over_at = wait_until(
            lambda: running.first(lambda found: any(p.pid != active.pid for p in found)),
            timeout=30, interval=0.1, what="another beat")
        assert took_over_at is not None
        takeover = took_over_at - killed_at
        print(f"beat takeover after SIGKILL: {takeover:.1f} s (lock {LOCK_SECONDS} s)")
        assert takeover <= LOCK_SECONDS + HEARTBEAT_SECONDS + START_MARGIN_SECONDS

        # The killed pod's container is restarted and its single-beat waits for the lock.
        def restarted() -> bool:
            (pod,) = [p for p in fleet.pods("scheduler")
                      if p["metadata"]["name"] == active.pod]
            return pod["status"]["containerStatuses"][0]["restartCount"] >= 1 and any(
                p.pod == active.pod and p.program == "single-beat"
                for p in scheduler_processes(fleet))

        wait_until(restarted, timeout=30, what=f"{active.pod} restarted")
        assert 0.5 <= tick_rate(client, 6) <= 1.5      # still one beat
        (now_active,) = beats(fleet)
        standby = {p.pod for p in scheduler_processes(fleet)} - {now_active.pod}
        assert len(standby) == 1
        print(f"beat now in {now_active.pod}; standing by: {standby.pop()} "
              f"(the killed pod was {active.pod})")
    finally:
        running.stop()
        client.close()
    assert max(len(found) for _, found in running.samples) == 1, "two beats at once"
