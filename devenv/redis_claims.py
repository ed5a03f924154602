"""Databases of the development Redis, claimed by one user at a time.

The suite's tests, ``make demo`` and the chaos soak share one Redis server (where pods reach
it too), and each empties the databases it uses. Each takes a database of its own by
claiming it in database 0: a key set only if absent (SET NX) with an expiry, so users that
share the server (two suites at once, a test run beside the demo) never get the same
database, and the database of a claimer that died comes back once its claim expires.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import redis

from devenv import services

SERVER = f"redis://{services.HOST}:{services.REDIS_PORT}"   # where pods reach it too
CLAIM_KEY = "metamapper-test:claim:{}"


def claim(candidates: Iterable[int], seconds: int, server: str = SERVER) -> str | None:
    """The URL of the first of ``candidates`` nobody holds, now claimed for ``seconds``
    and emptied; None when every one is claimed."""
    claims = redis.Redis.from_url(f"{server}/0")
    try:
        db = next((n for n in candidates
                   if claims.set(CLAIM_KEY.format(n), os.getpid(), nx=True, ex=seconds)),
                  None)
    finally:
        claims.close()
    if db is None:
        return None
    url = f"{server}/{db}"
    _empty(url)
    return url


def release(url: str) -> None:
    """Empty a database :func:`claim` gave and give it back."""
    server, _, db = url.rpartition("/")
    _empty(url)
    claims = redis.Redis.from_url(f"{server}/0")
    try:
        claims.delete(CLAIM_KEY.format(db))
    finally:
        claims.close()


def _empty(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
