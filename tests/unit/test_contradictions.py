"""Settings that contradict each other: the rules, and the conditions they set."""

from __future__ import annotations

from typing import Any

import pytest

from metamapper_operator.contradictions import (
    longest_time_limit,
    short_visibility_timeout,
    unconsumed_queues,
)
from metamapper_operator.model import parse
from metamapper_operator.status import Observed, raised_warnings, render


@pytest.mark.parametrize(("settings", "transport", "warns"), [
    ({}, "redis", False),                                   # 3600 s over 1200 s
    ({}, "sqs", False),                                     # 1800 s over 1200 s
    ({"broker_transport_options": {"visibility_timeout": 600}}, "redis", True),
    ({"broker_transport_options": {"visibility_timeout": 600}, "task_time_limit": 300},
     "sqs", False),
    ({"task_time_limit": 7200}, "redis", True),
    ({"task_time_limit": 100, "task_soft_time_limit": 4000}, "redis", True),
    ({"broker_transport_options": {"visibility_timeout": 10}}, "rabbitmq", False),
    ({"broker_transport_options": {"visibility_timeout": "soon"}}, "redis", False),
])
def test_visibility_timeout_below_the_longest_time_limit(
        settings: dict[str, Any], transport: str, warns: bool) -> None:
    message = short_visibility_timeout(settings, transport)
    assert (message is not None) is warns
    if message:
        assert "runs twice" in message


def test_longest_time_limit_defaults_to_the_worker_images() -> None:
    assert longest_time_limit({}) == 1200
    assert longest_time_limit({"task_time_limit": None}) == 1200


def test_unconsumed_queues_named_by_no_pool() -> None:
    assert unconsumed_queues(["default", "revisioner"], [
        "default", "typo-queue", "abc.reply.celery.pidbox", "celeryev.123", "old"]) == [
        "old", "typo-queue"]


BODY: dict[str, Any] = {
    "metadata": {"namespace": "ns", "name": "mm", "uid": "u-1", "generation": 2},
    "spec": {"image": "worker:1", "broker": {"url": "redis://redis:6379/0"},
             "celery": {"settings": {"broker_transport_options": {"visibility_timeout": 60}}},
             "pools": [{"name": "default", "queues": ["default"],
                        "terminationGracePeriodSeconds": 30}]},
}


def test_each_contradiction_is_a_warning_condition_raised_once() -> None:
    fleet = parse(BODY)
    first = render(Observed(generation=2, now="t0", fleet=fleet, transport="redis",
                            unconsumed=("typo",)), {})
    conditions = {c["type"]: c for c in first["conditions"]}
    assert conditions["GracePeriodTooShort"]["status"] == "True"
    assert conditions["VisibilityTimeoutTooShort"]["status"] == "True"
    assert conditions["QueueWithoutConsumer"]["status"] == "True"
    assert "typo" in conditions["QueueWithoutConsumer"]["message"]
    assert [kind for kind, _ in raised_warnings({}, first)] == [
        "GracePeriodTooShort", "VisibilityTimeoutTooShort", "QueueWithoutConsumer"]
    again = render(Observed(generation=2, now="t1", fleet=fleet, transport="redis",
                            unconsumed=("typo",)), first)
    assert raised_warnings(first, again) == []
    # Without a management API there is nothing to tell: no condition at all.
    unknown = render(Observed(generation=2, now="t1", fleet=fleet, transport="redis"), first)
    assert "QueueWithoutConsumer" not in {c["type"] for c in unknown["conditions"]}
