"""The operator's metric series through the autoscaler, over the fake Kube edge and probe
of test_wiring: per-queue depth and age, scale events with a bounded reason, broker up,
and series that go when what they describe goes. (Scraped for real: tests/e2e.)"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field

from prometheus_client import REGISTRY

from metamapper_operator import metrics
from metamapper_operator.autoscale.drainplan import Load, WorkerPod
from metamapper_operator.brokers import ProbeError, QueueDepth
from metamapper_operator.references import BrokerAccess
from tests.unit.sample import BODY
from tests.unit.test_builders import objects
from tests.unit.test_wiring import ACCESS, KEY, setup, shrinking

QUEUES = ("default", "checks")  # the pool "default" of test_builders.BODY


@dataclass
class DepthProbe:
    """Reports ``depth`` on every queue, or fails with ``error``."""

    depth: QueueDepth
    error: str | None = None
    source: str = "fake"
    round_trips: int = 0
    unconsumed: tuple[str, ...] | None = None
    failed: dict[str, str] = field(default_factory=dict)

    async def measure(self, queues: Collection[str]) -> dict[str, QueueDepth]:
        if self.error:
            raise ProbeError(self.error)
        return dict.fromkeys(queues, self.depth)

    async def close(self) -> None:
        pass


def samples_of(namespace: str, name: str) -> list[tuple[str, dict[str, str]]]:
    """Every sample in the registry labelled with this Metamapper."""
    return [(sample.name, sample.labels) for family in REGISTRY.collect()
            for sample in family.samples
            if (sample.labels.get("namespace"), sample.labels.get("metamapper"))
            == (namespace, name)]


def queue_value(metric: str, queue: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"namespace": KEY[0], "metamapper": KEY[1],
                                              "pool": "default", "queue": queue})


def pool_value(metric: str, **extra: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"namespace": KEY[0], "metamapper": KEY[1],
                                              "pool": "default", **extra})


def broker_up() -> float | None:
    return REGISTRY.get_sample_value("metamapper_broker_up",
                                     {"transport": "redis", "broker": "redis://r:6379/0"})


def test_queue_series_scale_reasons_and_broker_state() -> None:
    async def scenario() -> None:
        runtime, _, autoscaler = setup(replicas=1)
        probe = DepthProbe(QueueDepth(waiting=9, in_flight=2, oldest_age=31.5))
        autoscaler.probes[ACCESS] = probe
        # Counters only grow: other tests may have scaled this object's pool before.
        before = pool_value("metamapper_scale_events_total", direction="up",
                            reason="backlog") or 0
        await autoscaler.cycle()
        for queue in QUEUES:
            assert queue_value("metamapper_queue_messages_waiting", queue) == 9
            assert queue_value("metamapper_queue_messages_in_flight", queue) == 2
            assert queue_value("metamapper_queue_oldest_message_age_seconds", queue) == 31.5
        assert pool_value("metamapper_scale_events_total", direction="up",
                          reason="backlog") == before + 1
        assert pool_value("metamapper_pool_max_replicas") == 5
        assert pool_value("metamapper_pool_min_replicas") == 1
        assert broker_up() == 1

        # A probe that cannot tell an age: no earlier age stands in for it.
        probe.depth = QueueDepth(waiting=9, in_flight=None, oldest_age=None)
        await autoscaler.cycle()
        assert queue_value("metamapper_queue_oldest_message_age_seconds", "default") is None
        assert queue_value("metamapper_queue_messages_in_flight", "default") is None

        # The broker fails: it is down, the queues' depths are unknown, the pool stays.
        probe.error = "redis r:6379/0: ConnectionError: refused"
        await autoscaler.cycle()
        assert broker_up() == 0
        assert queue_value("metamapper_queue_messages_waiting", "default") is None
        assert pool_value("metamapper_pool_max_replicas") == 5

        runtime.forget(KEY)
        assert samples_of(*KEY) == []
        await autoscaler.cycle()  # no fleet uses the broker any more
        assert broker_up() is None

    asyncio.run(scenario())


def test_idle_scale_down_has_the_idle_reason() -> None:
    async def scenario() -> None:
        pods = {name: WorkerPod(name) for name in ("p-a", "p-b", "p-c", "p-d")}
        runtime, _, autoscaler, _, clock = shrinking(pods, dict.fromkeys(pods, Load()), 4)
        autoscaler.probes[ACCESS] = DepthProbe(QueueDepth(waiting=0, in_flight=0))
        before = pool_value("metamapper_scale_events_total", direction="down",
                            reason="idle") or 0
        # Past the stabilization window and the cooldown, the idle workers are drained and
        # the pool goes to minReplicas.
        await autoscaler.cycle()
        clock[0] = 10_000.0
        for _ in range(3):
            await autoscaler.cycle()
        assert pool_value("metamapper_scale_events_total", direction="down",
                          reason="idle") == before + 1
        runtime.forget(KEY)

    asyncio.run(scenario())


def test_series_of_a_deleted_object_go_and_others_stay() -> None:
    async def scenario() -> None:
        runtime, _, autoscaler = setup()
        autoscaler.probes[ACCESS] = DepthProbe(QueueDepth(waiting=5, in_flight=0,
                                                          oldest_age=1.0))
        await autoscaler.cycle()
        metrics.pool_table.record(metrics.PoolSeries("other", "mm", "default"),
                                  metrics.PoolFigures(1, 1, 0, 1, 3, {
                                      "default": metrics.QueueFigures(3, None, None)}))
        assert {name for name, _ in samples_of(*KEY)} >= {
            "metamapper_pool_backlog", "metamapper_queue_messages_waiting",
            "metamapper_queue_oldest_message_age_seconds", "metamapper_scale_events_total"}
        runtime.forget(KEY)
        assert samples_of(*KEY) == []
        assert REGISTRY.get_sample_value("metamapper_queue_messages_waiting", {
            "namespace": "other", "metamapper": "mm", "pool": "default",
            "queue": "default"}) == 3
        metrics.forget("other", "mm")

    asyncio.run(scenario())


def test_no_label_carries_a_broker_credential() -> None:
    async def scenario() -> None:
        secret = "s3cr3t-pa55"
        access = BrokerAccess(transport="redis", url=f"redis://user:{secret}@r:6379/0")
        runtime, _, autoscaler = setup()
        state = runtime.fleets[KEY]
        state.access = access
        autoscaler.probes[access] = DepthProbe(QueueDepth(waiting=1, in_flight=0))
        await autoscaler.cycle()
        text = "\n".join(f"{sample.name} {sample.labels}" for family in REGISTRY.collect()
                         for sample in family.samples)
        assert "r:6379/0" in text
        assert secret not in text and "user@" not in text and "user:" not in text
        runtime.forget(KEY)
        await autoscaler.cycle()

    asyncio.run(scenario())


def test_scale_reasons_are_a_closed_set() -> None:
    assert {reason.value for reason in metrics.ScaleReason} == {
        "backlog", "idle", "broker_unreachable"}


def test_worker_pods_expose_the_task_metrics_port_on_their_writable_tmp() -> None:
    built = objects(BODY)
    worker = built["mm-default"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9808, "protocol": "TCP"} in worker["ports"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["METAMAPPER_METRICS_PORT"] == "9808"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")
    assert {"name": "tmp", "mountPath": "/tmp"} in worker["volumeMounts"]
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    scheduler = built["mm-scheduler"]["spec"]["template"]["spec"]["containers"][0]
    assert "ports" not in scheduler


def test_pool_and_queue_gauges_are_rendered_from_one_record_a_pool() -> None:
    """Thousands of pools must not cost a prometheus_client child per series (about 1 KB
    each): the table keeps one record a pool and renders the samples when scraped."""
    table = metrics.PoolTable()
    for n in range(1000):
        table.record(metrics.PoolSeries("ns", f"mm-{n}", "default"), metrics.PoolFigures(
            2, 1, 0, 4, None if n % 2 else 7,
            {"default": metrics.QueueFigures(7, None if n % 2 else 1, 0.5)}))
    families = {family.name: family for family in table.collect()}
    samples = {name: len(family.samples) for name, family in families.items()}
    assert samples == {
        "metamapper_pool_backlog": 500, "metamapper_pool_desired_replicas": 1000,
        "metamapper_pool_current_replicas": 1000, "metamapper_pool_min_replicas": 1000,
        "metamapper_pool_max_replicas": 1000, "metamapper_queue_messages_waiting": 1000,
        "metamapper_queue_messages_in_flight": 500,
        "metamapper_queue_oldest_message_age_seconds": 1000}
    table.retain({metrics.PoolSeries("ns", "mm-0", "default"): ()})
    rendered = {family.name: family.samples for family in table.collect()}
    assert [s.labels["metamapper"] for s in rendered["metamapper_pool_max_replicas"]] == [
        "mm-0"]
    assert rendered["metamapper_queue_messages_waiting"] == []   # the queue is not read
    table.forget("ns", "mm-0")
    assert all(not family.samples for family in table.collect())
