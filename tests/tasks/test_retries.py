"""A task's retry that cannot be sent for want of the broker keeps the message it is
running, when that message is acknowledged late (the app's task class,
``metamapper.retries``); every other reject stays Celery's: one without requeue."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from celery import Celery, Task
from celery.exceptions import Reject, Retry
from prometheus_client import REGISTRY

from devenv.controlplane import free_port
from metamapper.celery import app as metamapper_app
from metamapper.retries import MetamapperTask

NAME = "retry-test.again"
REQUEUED = "metamapper_task_retry_requeued_total"


def again(self: Task, **_: Any) -> None:
    raise self.retry(countdown=1)


def unencodable(self: Task, **_: Any) -> None:
    raise self.retry(countdown=1, kwargs={"x": object()})


def unknown_parameter(self: Task) -> None:
    raise self.retry(countdown=1, kwargs={"x": 1})


def gives_up(self: Task) -> None:
    """Its own connection error, which no retry of its message will mend."""
    refused = ConnectionRefusedError("the data source refused")
    raise self.retry(exc=Reject(refused, requeue=False), max_retries=0)


def retrying_task(broker: str, body: Callable[..., None], task_cls: type[Task] = MetamapperTask,
                  acks_late: bool = True) -> Iterator[Task]:
    app = Celery("retry-test", broker=broker, task_cls=task_cls, set_as_current=False)
    app.conf.broker_connection_timeout = 1
    task = app.task(bind=True, name=NAME, acks_late=acks_late)(body)
    task.push_request(id="a-task-id", retries=0, called_directly=False,
                      delivery_info={"routing_key": "celery"})
    try:
        yield task
    finally:
        task.pop_request()
        app.close()


def rejected_by(broker: str, body: Callable[..., None], **options: Any) -> Reject:
    for task in retrying_task(broker, body, **options):
        with pytest.raises(Reject) as rejected:
            task.run()
    return rejected.value


def requeued() -> float:
    return REGISTRY.get_sample_value(REQUEUED, {"name": NAME}) or 0.0


def no_broker() -> str:
    return f"redis://:a-secret@127.0.0.1:{free_port()}/0"


def test_the_apps_tasks_are_of_the_class_and_acknowledged_late() -> None:
    assert issubclass(metamapper_app.Task, MetamapperTask)
    assert metamapper_app.conf.task_acks_late is True


@pytest.mark.parametrize("broker", [no_broker(), "redis://no-such-broker.invalid:6379/0"],
                         ids=["refused", "name-not-resolving"])
def test_a_retry_no_broker_takes_requeues_the_running_message(
        broker: str, caplog: pytest.LogCaptureFixture) -> None:
    """Celery's own class drops it (what lost a task in a DNS outage); ours requeues it,
    says so and counts it."""
    assert rejected_by(broker, again, task_cls=Task).requeue is False
    before = requeued()
    with caplog.at_level(logging.WARNING, logger="metamapper.retries"):
        assert rejected_by(broker, again).requeue is True
    assert requeued() == before + 1
    [record] = [r for r in caplog.records if r.name == "metamapper.retries"]
    assert record.levelno == logging.WARNING
    assert NAME in record.getMessage() and "a-task-id" in record.getMessage()
    assert "a-secret" not in record.getMessage()


def test_without_late_acknowledgement_a_retry_no_broker_takes_is_celerys_reject() -> None:
    """The message was acknowledged when received: a requeue would put nothing back and
    only hide the failure."""
    before = requeued()
    assert rejected_by(no_broker(), again, acks_late=False).requeue is False
    assert requeued() == before


def test_a_retry_that_cannot_be_encoded_is_not_requeued(redis_url: str) -> None:
    """It would fail the same way on every delivery: requeued, the body would run forever."""
    before = requeued()
    rejected = rejected_by(redis_url, unencodable)
    assert rejected.requeue is False
    assert type(rejected.reason).__name__ == "EncodeError"
    assert requeued() == before


def test_a_retry_with_arguments_the_task_does_not_take_is_not_requeued() -> None:
    rejected = rejected_by(no_broker(), unknown_parameter)
    assert rejected.requeue is False
    assert isinstance(rejected.reason, TypeError)


class BrokerOutOfMemory(MetamapperTask):
    """Its sends meet a Redis that refuses writes (maxmemory, noeviction), the error
    wrapped as Celery's send wraps it (kombu's OperationalError)."""

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        with (self.app.connection_for_write() as connection,
              connection._reraise_as_library_errors()):
            raise redis.ResponseError("OOM command not allowed when used memory > "
                                      "'maxmemory'.")


def test_a_retry_the_broker_answers_with_an_error_is_not_requeued() -> None:
    rejected = rejected_by(no_broker(), again, task_cls=BrokerOutOfMemory)
    assert rejected.requeue is False
    assert isinstance(rejected.reason.__cause__, redis.ResponseError)


def test_a_reject_the_task_asks_for_once_its_retries_are_spent_is_not_requeued() -> None:
    rejected = rejected_by(no_broker(), gives_up)
    assert rejected.requeue is False
    assert isinstance(rejected.reason, ConnectionRefusedError)


def test_a_retry_that_is_sent_lets_the_running_message_go(redis_url: str) -> None:
    before = requeued()
    for task in retrying_task(redis_url, again):
        with pytest.raises(Retry):
            task.run()
    client = redis.Redis.from_url(redis_url)
    assert client.llen("celery") == 1
    client.close()
    assert requeued() == before
