"""Work per key that only needs doing once however often it is asked for meanwhile: a
Deployment's owner publishes its status once for a burst of the Deployment's events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from itertools import islice
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)


class Coalescer(Generic[K]):
    """Keys asked for by :meth:`ask`, worked on by :meth:`run` at most ``concurrency`` at
    a time; a key asked for again while waiting is worked on once."""

    def __init__(self, work: Callable[[K], Awaitable[None]], concurrency: int = 8) -> None:
        self._work = work
        self._concurrency = concurrency
        self._waiting: dict[K, None] = {}   # in the order asked
        self._asked = asyncio.Event()

    def ask(self, key: K) -> None:
        self._waiting[key] = None
        self._asked.set()

    async def run(self) -> None:
        """Work on every key asked for, for ever."""
        while True:
            await self._asked.wait()
            self._asked.clear()
            while self._waiting:
                batch = list(islice(self._waiting, self._concurrency))
                for key in batch:
                    del self._waiting[key]
                await asyncio.gather(*(self._one(key) for key in batch))

    async def _one(self, key: K) -> None:
        try:
            await self._work(key)
        except Exception:   # one key's failure must not stop the others
            log.exception("work on %s failed", key)
