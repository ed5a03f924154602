"""Settings that contradict each other: the rules, and the conditions they set."""

from __future__ import annotations

from typing import Any

import pytest

from metamapper_operator.contradictions import (
    early_acks,
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


@pytest.mark.parametrize(("settings", "reason"), [
    ({}, None),                                                 # the worker image's: both on
    ({"task_acks_late": True, "task_reject_on_worker_lost": 1}, None),
    ({"task_acks_late": None}, "AckedBeforeRun"),               # removed: Celery's own, off
    ({"task_acks_late": False}, "AckedBeforeRun"),
    ({"task_acks_late": 0, "task_reject_on_worker_lost": None}, "AckedBeforeRun"),
    ({"task_reject_on_worker_lost": None}, "AckedWhenWorkerLost"),
    ({"task_acks_late": True, "task_reject_on_worker_lost": False}, "AckedWhenWorkerLost"),
])
def test_a_task_acknowledged_before_it_ends_is_lost_with_its_worker(
        settings: dict[str, Any], reason: str | None) -> None:
    early = early_acks(settings)
    assert (early.reason if early else None) == reason
    if early:
        assert "lost" in early.message


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


def test_late_acks_removed_or_off_raise_a_warning_condition() -> None:
    def acks(settings: dict[str, Any]) -> dict[str, Any]:
        body = {**BODY, "spec": {**BODY["spec"], "celery": {"settings": settings}}}
        status = render(Observed(generation=2, now="t0", fleet=parse(body),
                                 transport="redis"), {})
        (condition,) = [c for c in status["conditions"] if c["type"] == "AcksTooEarly"]
        warned = [kind for kind, _ in raised_warnings({}, status) if kind == "AcksTooEarly"]
        assert warned == (["AcksTooEarly"] if condition["status"] == "True" else [])
        return condition

    assert (acks({})["status"], acks({})["reason"]) == ("False", "AckedAfterRun")
    removed = acks({"task_acks_late": "$remove"})
    assert (removed["status"], removed["reason"]) == ("True", "AckedBeforeRun")
    assert "task_acks_late is removed" in removed["message"]
    off = acks({"task_acks_late": False})
    assert (off["status"], off["reason"]) == ("True", "AckedBeforeRun")
    assert "task_acks_late is false" in off["message"]
    lost = acks({"task_reject_on_worker_lost": "$remove"})
    assert (lost["status"], lost["reason"]) == ("True", "AckedWhenWorkerLost")
