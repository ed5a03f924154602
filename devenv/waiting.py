"""The one polling loop of the checkout: the development environment, the tests and the
benchmarks all wait with :func:`wait_until`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from devenv.errors import DevenvError

T = TypeVar("T")


class WaitTimeout(DevenvError, TimeoutError):
    """What was waited for did not happen in time (or the wait was given up early)."""


def wait_until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition",
               *, interval: float = 0.2, abort: Callable[[], bool] | None = None) -> T:
    """Poll ``predicate`` until it returns a truthy value, and return that value.

    Raises :class:`WaitTimeout` naming ``what`` and the last value once ``timeout``
    seconds have passed, or as soon as ``abort()`` holds (a daemon that should make the
    predicate true has exited, say): no point waiting for what can no longer happen.
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if abort is not None and abort():
            raise WaitTimeout(f"{what}: given up, it can no longer happen "
                              f"(last value: {value!r})")
        if time.monotonic() > deadline:
            raise WaitTimeout(f"{what}: not within {timeout:.0f} s (last value: {value!r})")
        time.sleep(interval)
    return value
