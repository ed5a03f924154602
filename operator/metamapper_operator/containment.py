"""Containment: whatever fails inside one object's step stays that object's.

Every per-object step of the reconcile and every per-pool step of the autoscaling cycle
runs inside a :class:`Boundary`. Any exception raised in it (an API error, a broker's, a
bug meeting a value nobody foresaw) ends that step only: the boundary turns it into a
:class:`~metamapper_operator.status.Fault` (a condition reason and a message with every
credential of the object scrubbed), which the caller records in the object's state with
:func:`settle`, so that the object's status says Ready False with the reason and one
Warning event announces it. Other objects, and the loop that walks them, go on.

Cancellation (``asyncio.CancelledError``, a ``BaseException``) is never contained: a
cycle past its limit, or an operator shutting down, must stop.

The log line of an unexpected error carries its traceback's frames but not the
exception's own text unscrubbed: a message may quote a URL with its password.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, MutableMapping
from types import TracebackType

from metamapper_operator.status import Fault
from metamapper_urls import redact_text, scrub

log = logging.getLogger(__name__)

#: The longest message a fault keeps (a condition message, an Event's note).
MESSAGE_LIMIT = 1024


def describe(err: BaseException, secrets: Iterable[str] = ()) -> str:
    """``err`` as one line a status may show: every URL redacted, every known secret
    masked, bounded in length."""
    text = str(err) or "no detail"
    text = " ".join(scrub(redact_text(text), [s for s in secrets if s]).split())
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT - 3] + "..."
    return text


class Boundary:
    """``with Boundary(step, reason, secrets) as boundary:`` runs a step; an exception
    in it is logged (scrubbed) and kept as ``boundary.fault`` instead of propagating.

    ``expected`` lists the exception types the step reports in words of its own
    (``KubeError``, ``SpecError``, ``ProbeError``): they are logged without a traceback
    and their message stands alone; anything else is a defect met at run time, logged
    with its frames, and its message names its type.
    """

    def __init__(self, step: str, reason: str, secrets: Iterable[str] = (),
                 expected: tuple[type[Exception], ...] = ()) -> None:
        self.step = step
        self.reason = reason
        self.secrets = [s for s in secrets if s]
        self.expected = expected
        self.fault: Fault | None = None
        self.error: Exception | None = None  # what was contained, for the caller's retry

    def __enter__(self) -> Boundary:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if err is None or not isinstance(err, Exception):
            return False  # success, or cancellation: not ours to keep
        self.error = err
        detail = describe(err, self.secrets)
        if isinstance(err, self.expected):
            message = detail
            log.warning("%s: %s", self.step, message)
        else:
            message = f"{type(err).__name__}: {detail}"
            frames = "".join(traceback.format_tb(tb))
            log.error("%s failed: %s\n%s", self.step, message, frames.rstrip())
        self.fault = Fault(step=self.step, reason=self.reason, message=message)
        return True


def settle(faults: MutableMapping[str, Fault], step: str, fault: Fault | None) -> Fault | None:
    """Record how ``step`` ended in ``faults``; the fault to announce (a Warning event),
    when it is new or its message changed, else None. A step that succeeds clears its
    fault."""
    before = faults.get(step)
    if fault is None:
        faults.pop(step, None)
        return None
    faults[step] = fault
    return fault if before != fault else None
