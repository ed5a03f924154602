"""A task's retry that cannot be sent keeps the message it is running (the app's task
class, ``metamapper.retries``); one that is sent lets it go as Celery does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from celery import Celery, Task
from celery.exceptions import Reject, Retry

from devenv.controlplane import free_port
from metamapper.celery import app as metamapper_app
from metamapper.retries import MetamapperTask


def retrying_task(broker: str, task_cls: type[Task]) -> Iterator[Task]:
    app = Celery("retry-test", broker=broker, task_cls=task_cls, set_as_current=False)
    app.conf.broker_connection_timeout = 1

    @app.task(bind=True, name="retry-test.again")
    def again(self: Task) -> None:
        raise self.retry(countdown=1)

    again.push_request(id="a-task-id", retries=0, called_directly=False,
                       delivery_info={"routing_key": "celery"})
    try:
        yield again
    finally:
        again.pop_request()
        app.close()


def test_the_apps_tasks_keep_their_message_when_a_retry_cannot_be_sent() -> None:
    assert issubclass(metamapper_app.Task, MetamapperTask)


@pytest.mark.parametrize(("task_cls", "requeue"), [(Task, False), (MetamapperTask, True)])
def test_a_retry_no_broker_takes_rejects_the_running_message(task_cls: type[Task],
                                                             requeue: bool) -> None:
    """Celery's own class drops it (what lost a task in a DNS outage); ours requeues it."""
    for task in retrying_task(f"redis://127.0.0.1:{free_port()}/0", task_cls):
        with pytest.raises(Reject) as rejected:
            task.run()
        assert rejected.value.requeue is requeue


def test_a_retry_that_is_sent_lets_the_running_message_go(redis_url: str) -> None:
    for task in retrying_task(redis_url, MetamapperTask):
        with pytest.raises(Retry):
            task.run()
    client = redis.Redis.from_url(redis_url)
    assert client.llen("celery") == 1
    client.close()
