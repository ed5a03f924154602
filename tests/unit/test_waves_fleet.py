"""The warm-up of a whole fleet in the autoscaling cycle, over a simulated day (the small
fakes of test_wiring): status is written only when the warm-up changes a pool's size,
the entries beat cannot run are announced once per fleet, a wall clock set back is
followed, and pods older than the operator's process are not taken for pod starts."""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any

import kopf

from metamapper_operator import handlers
from metamapper_operator.autoscale.drainplan import Load
from metamapper_operator.autoscale.loop import Autoscaler
from metamapper_operator.autoscale.waves import Outlook, Wave
from metamapper_operator.builders import LABEL_POOL
from metamapper_operator.config import Config
from metamapper_operator.model import parse
from metamapper_operator.state import Key
from metamapper_operator.status import DeploymentState, measured
from tests.unit.sample import BODY
from tests.unit.test_reconcile_containment import StatusKube, condition
from tests.unit.test_waves_loop import StartingKube, at, wall_clock_autoscaler
from tests.unit.test_wiring import ACCESS, FakeControl, FakeProbe, runtime_of

UTC = datetime.UTC
POLL = 30
#: The pools of a fleet on upstream's schedule with a metastore: three kept at one pod (the
#: warm-up asks no more of them), the revisioner's at zero between its waves.
POOLS = [
    {"name": "default", "queues": ["default"], "minReplicas": 1, "maxReplicas": 3},
    {"name": "checks", "queues": ["checks"], "minReplicas": 1, "maxReplicas": 3},
    {"name": "usage", "queues": ["usage"], "minReplicas": 1, "maxReplicas": 3},
    {"name": "runs", "queues": ["revisioner"], "minReplicas": 0, "maxReplicas": 3},
]


class Fleets:
    """Metamappers with a metastore (upstream's beat, every entry), each with ``pools``; a
    wall clock the test moves (the policy's clock moves with it)."""

    def __init__(self, *names: str, pools: list[dict[str, Any]] | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.wall = at("2026-12-07T00:05:00")
        self.kube = StartingKube()
        self.runtime = runtime_of(self.kube, Config(poll_seconds=POLL))
        self.pools = copy.deepcopy(pools or POOLS)
        self.keys = [Key("ns", name) for name in names or ("mm",)]
        for n, key in enumerate(self.keys):
            raw = copy.deepcopy(BODY)
            raw["metadata"].update(namespace=key.namespace, name=key.name, uid=f"u-{n}")
            raw["spec"]["pools"] = copy.deepcopy(self.pools)
            raw["spec"]["celery"] = {"settings": settings or {}}
            raw["spec"]["env"] = [{"name": "METAMAPPER_DB_HOST", "value": "metastore"}]
            state, _ = self.runtime.state(key, f"u-{n}")
            state.fleet, state.access, state.generation = parse(raw), ACCESS, 3
        self.runtime.note_change()
        self.control = FakeControl({})
        self.autoscaler = wall_clock_autoscaler(self.runtime, self.kube, self.deployments,
                                                lambda: self.wall, lambda: self.control)

    def size(self, key: Key, pool: dict[str, Any]) -> int:
        name = f"{key.name}-{pool['name']}"
        sizes = [size for scaled, size in self.kube.scaled if scaled == name]
        return sizes[-1] if sizes else int(pool["minReplicas"])

    def deployments(self, key: Key) -> dict[str, DeploymentState]:
        found = {}
        for pool in self.pools:
            n, name = self.size(key, pool), f"{key.name}-{pool['name']}"
            found[name] = DeploymentState(name=name, spec_hash="h", replicas=n, ready=n,
                                          updated=n)
        return found

    async def cycle(self, at_time: str | None = None) -> None:
        if at_time is not None:
            self.wall = at(at_time)
        # One pod for each pool that has any, with whatever the operator wrote on it.
        pods = {f"p-{key.name}-{pool['name']}": pool["name"] for key in self.keys
                for pool in self.pools if self.size(key, pool)}
        self.kube.labels = {pod: {LABEL_POOL: pool} for pod, pool in pods.items()}
        self.kube.pods = {pod: self.kube.pods.get(pod, {}) for pod in pods}
        self.control.held = {pod: Load() for pod in pods}
        await self.autoscaler.cycle()
        if self.autoscaler.asking is not None:
            await self.autoscaler.asking

    def shown(self, pool: str, key: Key | None = None) -> Outlook | None:
        return self.runtime.fleets[key or self.keys[0]].scaling[pool].warm_up


def test_status_is_written_only_when_the_warm_up_changes_a_pools_size() -> None:
    """A day of upstream's schedule: the pools at one pod never move (their warm-up is
    covered by minReplicas), the revisioner's pool is written three times a wave: its floor
    rises (and its size with it), the hold ends, the policy takes it back to zero (two
    writes: its worker drained, then removed)."""
    async def scenario() -> None:
        fleets = Fleets()
        await fleets.cycle()                                  # the first status
        for pool in ("default", "checks", "usage"):
            assert fleets.shown(pool) == Outlook(warm=False, covered=True)
        first = fleets.shown("runs")
        assert first == Outlook(warm=False, lead_seconds=2 * POLL,   # 30 s start + 30 s
                                next_wave=Wave("queue-revisioner-runs",
                                               at("2026-12-07T00:15:00")))
        written: list[datetime.datetime] = []
        end = fleets.wall + datetime.timedelta(days=1)
        while fleets.wall < end:
            fleets.wall += datetime.timedelta(seconds=POLL)
            before = fleets.kube.statuses
            await fleets.cycle()
            if fleets.kube.statuses != before:
                written.append(fleets.wall)
            for pool in ("default", "checks", "usage"):
                assert fleets.shown(pool) == Outlook(warm=False, covered=True)
        # Upstream's revisioner entries fire at :00 (two entries), :15 and :45. Each wave
        # is written when its floor rises (the pool with it, lead seconds before), when the
        # hold ends (a minute after), and twice by the policy taking the pool back to zero
        # (its worker drained, then removed): nothing else, in particular not at the
        # firings of the entries of the pools at one pod.
        minute = datetime.timedelta(minutes=1)
        waves = [at("2026-12-07T00:15:00") + m * minute for m in range(0, 24 * 60, 15)
                 if m % 60 != 15]
        expected = [stamp for due in waves for stamp in (
            due - minute, due + minute, due + 2 * minute, due + 2.5 * minute)]
        assert written == expected
        assert sum(1 for name, _ in fleets.kube.scaled if name == "mm-runs") == 2 * len(waves)
        assert not [name for name, _ in fleets.kube.scaled if name != "mm-runs"]

    asyncio.run(scenario())


def test_an_entry_beat_runs_and_the_warm_up_cannot_read_is_announced_once_per_fleet(
        ) -> None:
    """Pools of one fleet, one with its warm-up off: the fleet is told once, not once a
    pool a cycle."""
    pools = copy.deepcopy(POOLS)
    pools[0]["autoscaling"] = {"warmUp": {"enabled": False}}
    pools[2]["autoscaling"] = {"warmUp": {"enabled": False}}

    async def scenario() -> None:
        fleets = Fleets(pools=pools, settings={"task_routes": {
            "app.revisioner.tasks.v1.scheduler.queue_runs": 5}})
        for _ in range(20):
            await fleets.cycle()
            fleets.wall += datetime.timedelta(seconds=POLL)
        assert fleets.kube.events.count("BeatEntryIgnored") == 1
        warm = fleets.shown("runs")
        assert warm is not None and warm.ignored == (
            "beat entry queue-revisioner-runs: the route of "
            "app.revisioner.tasks.v1.scheduler.queue_runs is neither a queue name nor an "
            "object naming one",)
        assert fleets.shown("default") is None

    asyncio.run(scenario())


def test_a_wall_clock_set_back_is_followed_at_once() -> None:
    async def scenario() -> None:
        fleets = Fleets()
        await fleets.cycle()                           # at rest until :14, then quiet
        while fleets.autoscaler.quiet is None and fleets.wall < at("2026-12-07T00:10:00"):
            fleets.wall += datetime.timedelta(seconds=5)
            await fleets.cycle()
        assert fleets.autoscaler.quiet is not None and fleets.kube.scaled == []
        await fleets.cycle("2026-12-06T23:59:30")    # set back: 30 s before a wave
        assert fleets.shown("runs") == Outlook(
            warm=True, lead_seconds=2 * POLL,
            next_wave=Wave("create-revisioner-runs", at("2026-12-07T00:00:00")))
        assert fleets.kube.scaled == [("mm-runs", 1)]

    asyncio.run(scenario())


def test_a_wall_clock_set_back_into_a_schedule_window_opens_it() -> None:
    """Schedule windows are evaluated the same way: again when the clock goes back."""
    pools = copy.deepcopy(POOLS)
    pools[3]["autoscaling"] = {"warmUp": {"enabled": False}, "schedules": [
        {"name": "midnight", "cron": "0 0 * * *", "durationSeconds": 600,
         "minReplicas": 2}]}

    async def scenario() -> None:
        fleets = Fleets(pools=pools)
        fleets.wall = at("2026-12-07T00:20:00")        # after the window closed
        await fleets.cycle()
        while fleets.autoscaler.quiet is None and fleets.wall < at("2026-12-07T00:25:00"):
            fleets.wall += datetime.timedelta(seconds=5)
            await fleets.cycle()
        assert fleets.autoscaler.quiet is not None and fleets.kube.scaled == []
        await fleets.cycle("2026-12-07T00:05:00")      # set back into the window
        assert fleets.kube.scaled == [("mm-runs", 2)]

    asyncio.run(scenario())


def test_pods_older_than_the_process_are_not_taken_for_pod_starts() -> None:
    """A pod that was there before the operator (re)started: its Ready condition may have
    come back after a broker outage, hours after its start."""
    async def scenario(created: str) -> int | None:
        fleets = Fleets()
        fleets.kube.start_seconds, fleets.kube.created = 12.4, at(created)
        fleets.autoscaler.probes[ACCESS] = FakeProbe(1)    # work: the workers are asked
        await fleets.cycle()
        await fleets.cycle("2026-12-07T00:06:00")
        await fleets.cycle("2026-12-07T00:06:30")
        warm = fleets.shown("runs")
        return None if warm is None else warm.lead_seconds

    assert asyncio.run(scenario("2026-12-07T00:05:00")) == 13 + POLL   # 12.4 s, up, + 30 s
    assert asyncio.run(scenario("2026-12-06T20:00:00")) == 30 + POLL   # the default


def test_a_warm_up_status_of_another_shape_is_not_read_back() -> None:
    for shown in ({"warm": True, "nextWave": {"at": "2026-12-07T00:15:00Z"}},
                  {"warm": True, "nextWave": {"entry": "x", "at": "soon"}},
                  {"leadSeconds": "a minute"}, {"continuous": 5}, ["warm"]):
        status = {"pools": [{"name": "runs", "backlog": 0, "warmUp": shown}]}
        assert measured(status).scaling["runs"].warm_up is None


def test_a_crontab_celery_refuses_makes_its_fleet_invalid_and_no_other() -> None:
    """Every worker of the fleet would fail to start (the worker builds each entry's
    schedule when it starts): the fleet is refused naming the entry; the fleet beside it
    is reconciled and warmed as ever."""
    async def scenario() -> None:
        kube = StatusKube()
        runtime = runtime_of(kube)
        good, bad = Key("ns", "good"), Key("ns", "bad")
        for key, schedule in ((good, "0 0 * * 6"), (bad, "0 0 * * 7")):
            raw = copy.deepcopy(BODY)
            raw["metadata"].update(namespace=key.namespace, name=key.name,
                                   uid=f"u-{key.name}", generation=1)
            raw["spec"]["celery"] = {"settings": {"beat_schedule": {"nightly": {
                "task": "app.revisioner.tasks.v1.scheduler.queue_runs",
                "schedule": schedule}}}}
            await handlers.reconcile(kopf.Body(raw), runtime, {}, {}, from_event=True)
            if key == bad:
                ready = condition(kube, "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
        assert ready["message"] == (
            "spec.celery.settings.beat_schedule.nightly.schedule: '0 0 * * 7' is not a "
            "crontab Celery accepts: its day of week '7' holds 7, outside 0-6; every "
            "worker of the fleet would fail to start")
        assert [reason for _, reason, _ in kube.notes if reason == "InvalidSpec"] == [
            "InvalidSpec"]
        assert runtime.fleets[bad].invalid == ready["message"]
        assert runtime.fleets[good].invalid is None
        assert runtime.fleets[good].fleet is not None
        # The autoscaling cycle walks the valid fleet alone, without a fault.
        autoscaler = Autoscaler(runtime, lambda key: {
            f"{key.name}-default": DeploymentState(name=f"{key.name}-default",
                                                   spec_hash="h", replicas=1, ready=1,
                                                   updated=1)},
            wall=lambda: at("2026-12-07T10:20:00"))
        autoscaler.probes[ACCESS] = FakeProbe(0)
        runtime.fleets[good].access = ACCESS
        await autoscaler.cycle()
        assert "default" in runtime.fleets[good].scaling
        assert runtime.fleets[good].faults == {} and runtime.fleets[bad].scaling == {}

    asyncio.run(scenario())
