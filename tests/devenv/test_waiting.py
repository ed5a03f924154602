"""The one polling loop: returns the first truthy value, names what timed out, gives up
early when what it waits for can no longer happen."""

from __future__ import annotations

import time

import pytest

from devenv.waiting import WaitTimeout, wait_until
from tests.helpers import wait_for_event


def test_returns_the_first_truthy_value() -> None:
    values = iter([0, None, [], 7])
    assert wait_until(lambda: next(values), 5, "seven", interval=0.01) == 7


def test_a_timeout_names_what_and_the_last_value() -> None:
    began = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"the queue empty: not within 0 s \(last value: \[\]\)"):
        wait_until(list, 0.05, "the queue empty", interval=0.01)
    assert time.monotonic() - began < 2


def test_abort_gives_up_before_the_timeout() -> None:
    began = time.monotonic()
    with pytest.raises(WaitTimeout, match="redis: given up"):
        wait_until(lambda: False, 30, "redis", interval=0.01, abort=lambda: True)
    assert time.monotonic() - began < 2


def test_an_event_posted_after_the_change_is_waited_for() -> None:
    """The operator posts a ScaledUp Event after the scale it announces: a reader that
    finds it only on its third look still gets it."""
    posted = iter([[], ["pool default: 1 -> 2 pods"], ["pool default: 1 -> 2 pods",
                                                        "pool default: 2 -> 4 pods"]])
    seen: list[str] = []

    def events(reason: str) -> list[str]:
        assert reason == "ScaledUp"
        seen[:] = next(posted, seen)
        return seen

    assert wait_for_event(events, "ScaledUp", "-> 4 pods", timeout=5) == \
        "pool default: 2 -> 4 pods"


def test_an_event_never_posted_fails_listing_those_that_were() -> None:
    with pytest.raises(AssertionError, match=r"no ScaledDown event containing '3 -> 1'.*"
                                             r"\['pool default: 4 -> 3 pods'\]"):
        wait_for_event(lambda _: ["pool default: 4 -> 3 pods"], "ScaledDown", "3 -> 1",
                       timeout=0.1)
