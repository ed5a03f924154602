"""Drain before delete against real brokers and real ``celery worker`` processes: a worker
told to stop consuming finishes what it holds and takes nothing new, until it is given its
queue back. (Redis and RabbitMQ; SQS has no broadcast, so there is no drain there.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from metamapper_operator.autoscale.drain import ControlError, WorkerControl, can_broadcast
from metamapper_operator.autoscale.drainplan import Load
from metamapper_operator.references import BrokerAccess
from tests.conftest import RabbitMQ


async def eventually(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Await ``check()`` until it returns something true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def started(gate: Path) -> int:
    return len(list(gate.glob("started-*")))


async def drain_and_resume(access: BrokerAccess, publisher: Callable[..., Celery],
                           worker: Callable[..., Any], tmp_path: Path) -> None:
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    worker(access.url, queue, concurrency=1)
    worker(access.url, queue, concurrency=1)
    hosts = ["probe0@test", "probe1@test"]
    control = WorkerControl(access, {})
    assert await control.loads(hosts) == {host: Load() for host in hosts}
    app = publisher(access.url)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()

    app.send_task("tests.brokers.hold", args=[str(first)], queue=queue)
    loads = await eventually(lambda: _with_active(control, hosts), "one task running")
    (busy,) = [host for host, load in loads.items() if load.active]
    (idle,) = set(hosts) - {busy}
    assert await control.stop_consuming([busy], [queue]) == {busy}

    # Two more tasks: the idle worker takes one, nobody takes the other; the draining
    # worker keeps running its own and receives nothing new.
    for _ in range(2):
        app.send_task("tests.brokers.hold", args=[str(second)], queue=queue)
    await eventually(lambda: _started(second, 1), "the idle worker's task")
    await asyncio.sleep(2)
    assert started(second) == 1
    assert (await control.loads(hosts))[busy] == Load(active=1)

    (first / "release").touch()   # the draining worker's task ends: it holds nothing
    await eventually(lambda: _holds_nothing(control, busy), "the drained worker idle")
    await asyncio.sleep(2)
    assert started(second) == 1, "a drained worker took a task"

    assert await control.resume_consuming([busy], [queue]) == {busy}
    await eventually(lambda: _started(second, 2), "the resumed worker's task")
    loads = await control.loads(hosts)
    assert loads[busy] == Load(active=1) and loads[idle] == Load(active=1)
    (second / "release").touch()


async def _with_active(control: WorkerControl, hosts: list[str]) -> dict[str, Load] | None:
    loads = await control.loads(hosts)
    return loads if sum(load.active for load in loads.values()) == 1 else None


async def _started(gate: Path, count: int) -> bool:
    return started(gate) == count


async def _holds_nothing(control: WorkerControl, host: str) -> bool:
    return (await control.loads([host])).get(host) == Load()


async def test_redis_drain_stops_new_work_and_resume_gives_it_back(
        redis_url: str, publisher: Callable[..., Celery], worker: Callable[..., Any],
        tmp_path: Path) -> None:
    await drain_and_resume(BrokerAccess(transport="redis", url=redis_url), publisher, worker,
                           tmp_path)


async def test_rabbitmq_drain_stops_new_work_and_resume_gives_it_back(
        rabbitmq: RabbitMQ, publisher: Callable[..., Celery], worker: Callable[..., Any],
        tmp_path: Path) -> None:
    await drain_and_resume(BrokerAccess(transport="rabbitmq", url=rabbitmq.amqp_url),
                           publisher, worker, tmp_path)


async def test_prefetched_and_eta_tasks_count_as_held(
        redis_url: str, publisher: Callable[..., Celery], worker: Callable[..., Any],
        tmp_path: Path) -> None:
    """A worker with a task waiting for its ETA holds it: the operator sees it."""
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    worker(redis_url, queue, concurrency=1)
    control = WorkerControl(BrokerAccess(transport="redis", url=redis_url), {})
    app = publisher(redis_url)
    app.send_task("tests.brokers.hold", args=[str(tmp_path)], queue=queue, countdown=60)
    found = await eventually(lambda: _scheduled(control), "the ETA task held")
    assert found == Load(scheduled=1)


async def eta_task_given_back(access: BrokerAccess, publisher: Callable[..., Celery],
                              worker: Callable[..., Any], tmp_path: Path) -> None:
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    drained = worker(access.url, queue, concurrency=1)
    control = WorkerControl(access, {})
    (tmp_path / "release").touch()            # the task ends as soon as it runs
    publisher(access.url).send_task("tests.brokers.hold", args=[str(tmp_path)],
                                    queue=queue, countdown=6)
    assert await eventually(lambda: _scheduled(control), "the ETA task held") == Load(
        scheduled=1)
    assert await control.stop_consuming(["probe0@test"], [queue]) == {"probe0@test"}
    drained.stop()                            # SIGTERM: the warm shutdown of a deleted pod
    assert started(tmp_path) == 0
    worker(access.url, queue, concurrency=1)
    await eventually(lambda: _started(tmp_path, 1), "the ETA task run by the other worker")
    await asyncio.sleep(1)
    assert started(tmp_path) == 1


async def test_redis_eta_tasks_of_a_drained_worker_go_back_at_its_warm_shutdown(
        redis_url: str, publisher: Callable[..., Celery], worker: Callable[..., Any],
        tmp_path: Path) -> None:
    """Why a drained worker holding only ETA tasks may be removed (autoscale/drainplan.py):
    its shutdown hands them back at once (kombu restores unacknowledged messages when the
    channel closes), not after the visibility timeout, and another worker runs them."""
    await eta_task_given_back(BrokerAccess(transport="redis", url=redis_url), publisher,
                              worker, tmp_path)


async def test_rabbitmq_eta_tasks_of_a_drained_worker_go_back_at_its_warm_shutdown(
        rabbitmq: RabbitMQ, publisher: Callable[..., Celery], worker: Callable[..., Any],
        tmp_path: Path) -> None:
    await eta_task_given_back(BrokerAccess(transport="rabbitmq", url=rabbitmq.amqp_url),
                              publisher, worker, tmp_path)


async def _scheduled(control: WorkerControl) -> Load | None:
    load = (await control.loads(["probe0@test"])).get("probe0@test")
    return load if load and load.scheduled else None


async def test_a_worker_that_does_not_exist_is_missing_not_idle(redis_url: str) -> None:
    control = WorkerControl(BrokerAccess(transport="redis", url=redis_url), {})
    assert await control.loads(["default@gone"]) == {}
    assert await control.stop_consuming(["default@gone"], ["default"]) == set()


@pytest.mark.parametrize("transport", ["redis", "rabbitmq"])
async def test_an_unreachable_broker_is_a_control_error_without_the_password(
        transport: str, closed_port: int) -> None:
    scheme = "redis" if transport == "redis" else "amqp"
    access = BrokerAccess(transport=transport,
                          url=f"{scheme}://user:s3cret@127.0.0.1:{closed_port}/0")
    with pytest.raises(ControlError) as failed:
        await WorkerControl(access, {}).loads(["default@pod"])
    assert "s3cret" not in str(failed.value)
    assert "asking the workers what they hold" in str(failed.value)


def test_sqs_has_no_broadcast_so_no_drain() -> None:
    assert not can_broadcast(BrokerAccess(transport="sqs", url="sqs://"))
    assert can_broadcast(BrokerAccess(transport="redis", url="redis://r:6379/0"))
    assert can_broadcast(BrokerAccess(transport="rabbitmq", url="amqp://r:5672//"))
