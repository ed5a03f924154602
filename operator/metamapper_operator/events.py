"""Event correlation: repeated events become one Event with a count, and every object's
events are rate-limited, so a flapping pool cannot flood etcd.

What client-go's ``EventCorrelator`` does for every Go controller, in small:

- **Repeats.** An event identical to one posted about the same object less than
  ``window`` seconds ago (same object, type, reason and message) is not a new Event: the
  existing one gets ``count + 1`` and a new ``lastTimestamp`` (``kubectl describe`` shows
  "x5 over 3m").
- **Rate.** Each object has a token bucket: ``burst`` events at once, then one more per
  ``refill_seconds``; an event without a token is dropped (and logged by the caller).
  client-go refills one token every 5 minutes; the operator's events are its scaling
  decisions, which users read, so it refills faster and still bounds a pool that flaps every
  cycle to a few writes a minute.
- **Memory.** Both tables keep at most ``capacity`` entries, the least recently used going
  first.

No I/O: the clock is injected, and the caller does the requests (:meth:`Kube.event`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, kw_only=True)
class Involved:
    """The object an event is about."""

    namespace: str
    name: str
    uid: str | None


@dataclass(frozen=True, kw_only=True)
class EventKey:
    """What makes two events the same event."""

    involved: Involved
    type: str
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Posted:
    """The Event object that holds a series of identical events."""

    name: str
    count: int
    at: float
    """When the series last grew, on the correlator's clock."""


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Correlator:
    """Remembers recent events to count repeats and to rate-limit each object."""

    clock: Callable[[], float]
    window: float = 600.0
    burst: int = 25
    refill_seconds: float = 10.0
    capacity: int = 4096
    _posted: OrderedDict[EventKey, Posted] = field(default_factory=OrderedDict, repr=False)
    _buckets: OrderedDict[Involved, _Bucket] = field(default_factory=OrderedDict, repr=False)

    def admit(self, involved: Involved) -> bool:
        """Take a token of ``involved``'s bucket; False when it has none left."""
        now = self.clock()
        bucket = self._buckets.pop(involved, None) or _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst),
                            bucket.tokens + (now - bucket.at) / self.refill_seconds)
        bucket.at = now
        self._remember(self._buckets, involved, bucket)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def repeat_of(self, key: EventKey) -> Posted | None:
        """The Event to count ``key`` in: one posted less than ``window`` seconds ago."""
        posted = self._posted.get(key)
        if posted is None or self.clock() - posted.at >= self.window:
            return None
        return posted

    def posted(self, key: EventKey, name: str, count: int) -> None:
        """Record that Event ``name`` now holds ``count`` events of ``key``."""
        self._posted.pop(key, None)
        self._remember(self._posted, key, Posted(name=name, count=count, at=self.clock()))

    def _remember(self, table: OrderedDict[K, V], key: K, value: V) -> None:
        table[key] = value
        while len(table) > self.capacity:
            table.popitem(last=False)
