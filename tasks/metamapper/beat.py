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

Both leave out the entries that need Metamapper's metastore when no METAMAPPER_DB_* is set,
and say so once (:mod:`metamapper.metastore_env`), whichever configuration module gave the
schedule.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.beat import PersistentScheduler
from redbeat import RedBeatScheduler

from metamapper import metastore_env, probe

logger = logging.getLogger(__name__)


class _WithoutMetastore:
    """Without a metastore, schedule only the entries that have a use without one."""

    app: Any

    def setup_schedule(self) -> None:
        if not metastore_env.configured(os.environ):
            kept, left_out = metastore_env.split_schedule(self.app.conf.beat_schedule)
            self.app.conf.beat_schedule = kept
            logger.warning(metastore_env.beat_warning(left_out))
        super().setup_schedule()  # type: ignore[misc]


class _StampTicks:
    """Refresh the beat's liveness stamp on every tick."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval: float = super().tick(*args, **kwargs)  # type: ignore[misc]
        probe.stamp(probe.BEAT_LIVE)
        return interval

    def close(self) -> None:
        probe.unstamp(probe.BEAT_LIVE)
        super().close()  # type: ignore[misc]


class FileScheduler(_StampTicks, _WithoutMetastore, PersistentScheduler):
    #: celery-redbeat, once imported (by this module), asks whatever scheduler beat runs
    #: for its ``lock_key`` when beat starts, and takes no lock when it is None. Without
    #: it, every start logged an AttributeError with its traceback.
    lock_key = None


class RedisScheduler(_StampTicks, _WithoutMetastore, RedBeatScheduler):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.lock_key = None
