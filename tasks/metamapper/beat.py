"""Beat schedulers that stamp each tick for the scheduler's liveness probe.

- :class:`FileScheduler` (the default): Celery's own, the schedule's state in the file
  ``--schedule`` names (in the pod's ``/tmp``, lost with the pod).
- :class:`RedisScheduler`: celery-redbeat's, the schedule's state (each entry's last run)
  in Redis under ``redbeat_key_prefix``, so a standby that takes over continues where the
  active beat stopped: an entry that came due while no beat ran is sent once when the new
  beat starts (not skipped), and one already sent is not sent again. RedBeat's own lock is
  not used: single-beat (or the Standalone mode's single pod) already keeps to one beat,
  and a lock left by a killed beat would hold the standby back for its whole timeout.
  Its Redis: ``METAMAPPER_BEAT_REDIS_URL`` (see :mod:`metamapper.settings`).
"""

from __future__ import annotations

from typing import Any

from celery.beat import PersistentScheduler
from redbeat import RedBeatScheduler

from metamapper import probe


class _StampTicks:
    """Refresh the beat's liveness stamp on every tick."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)  # type: ignore[misc]
        probe.stamp(probe.BEAT_LIVE)
        return interval

    def close(self) -> None:
        probe.unstamp(probe.BEAT_LIVE)
        super().close()  # type: ignore[misc]


class FileScheduler(_StampTicks, PersistentScheduler):
    pass


class RedisScheduler(_StampTicks, RedBeatScheduler):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.lock_key = None
