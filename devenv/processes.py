"""Process-group helpers for the local daemons (each runs in a session of its own)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable


def alive(pid: int) -> bool:
    """Whether the process group ``pid`` leads still has a live member."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_groups(pids: Iterable[int], grace: float) -> None:
    """SIGTERM each process group, then SIGKILL whatever is left after ``grace`` seconds."""
    pids = list(pids)
    for pid in pids:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        signal_group(pid, signal.SIGKILL)
