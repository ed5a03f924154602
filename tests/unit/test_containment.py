"""The boundary every per-object step runs in: any exception becomes that object's fault,
scrubbed; cancellation is never contained."""

from __future__ import annotations

import asyncio
import logging

import pytest

from metamapper_operator.containment import MESSAGE_LIMIT, Boundary, describe, settle
from metamapper_operator.model import parse
from metamapper_operator.status import Fault, Observed, render
from tests.unit.sample import BODY, settled

PASSWORD = "s3cr3t-p4ss"


def test_an_unexpected_error_becomes_a_fault_naming_its_type_without_the_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), Boundary("pool default", "AutoscalingFailed",
                                                  [PASSWORD]) as boundary:
        raise ValueError(f"cannot use redis://:{PASSWORD}@redis:6379/0 nor {PASSWORD}")
    assert boundary.fault is not None
    assert boundary.fault.step == "pool default"
    assert boundary.fault.reason == "AutoscalingFailed"
    assert boundary.fault.message.startswith("ValueError: cannot use redis://")
    assert PASSWORD not in boundary.fault.message
    assert PASSWORD not in caplog.text
    assert "Traceback" not in caplog.text  # frames only: the last line would quote err
    assert "test_containment.py" in caplog.text  # ... but where it was raised is logged


def test_an_expected_error_keeps_its_own_words() -> None:
    class Refused(Exception):
        pass

    with Boundary("reconcile", "ApplyFailed", expected=(Refused,)) as boundary:
        raise Refused("the apiserver refused the Deployment")
    assert boundary.fault == Fault(step="reconcile", reason="ApplyFailed",
                                   message="the apiserver refused the Deployment")


def test_nothing_raised_is_no_fault() -> None:
    with Boundary("reconcile", "ApplyFailed") as boundary:
        pass
    assert boundary.fault is None


async def test_cancellation_is_never_contained() -> None:
    async def step() -> None:
        with Boundary("pool default", "AutoscalingFailed"):
            await asyncio.sleep(10)

    task = asyncio.create_task(step())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_messages_are_one_bounded_line() -> None:
    text = describe(RuntimeError("line one\n" + "x" * (3 * MESSAGE_LIMIT)))
    assert "\n" not in text
    assert len(text) == MESSAGE_LIMIT
    assert describe(RuntimeError()) == "no detail"


def test_settle_announces_a_fault_once_and_clears_it_on_success() -> None:
    faults: dict[str, Fault] = {}
    first = Fault(step="s", reason="R", message="m")
    assert settle(faults, "s", first) == first
    assert settle(faults, "s", first) is None            # the same again: no new event
    changed = Fault(step="s", reason="R", message="other")
    assert settle(faults, "s", changed) == changed       # a new message: announced
    assert settle(faults, "s", None) is None
    assert faults == {}


def test_a_fault_makes_the_object_not_ready_and_degraded_with_its_reason() -> None:
    running = {"mm-default": settled("mm-default"), "mm-scheduler": settled("mm-scheduler", 2)}
    fault = Fault(step="pool default", reason="AutoscalingFailed", message="ValueError: x")
    status = render(Observed(generation=1, now="t", fleet=parse(BODY), transport="redis",
                             deployments=running, faults=(fault,)), {})
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "AutoscalingFailed"
    assert conditions["Ready"]["message"] == "pool default: ValueError: x"
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Degraded"]["reason"] == "AutoscalingFailed"
