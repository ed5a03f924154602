"""Databases of the development Redis, claimed by one user at a time.

The suite's tests, ``make demo``, the chaos soak and the benchmarks share one Redis server
(where pods reach it too), and each empties the databases it uses. Each takes a database
of its own by claiming it in database 0: a key set only if absent (SET NX) with an expiry,
holding a token of this claim's own, so users that share the server (two suites at once, a
test run beside the demo) never get the same database, and the database of a claimer that
died comes back once its claim expires.

A claim can outlive its expiry (a test held longer than its claim's seconds); by then
another user may have claimed the database. So :func:`release` empties the database and
deletes the claim only while the claim still holds its token, in one script Redis runs
atomically; otherwise it leaves both to their new holder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from devenv import services

SERVER = f"redis://{services.HOST}:{services.REDIS_PORT}"   # where pods reach it too
CLAIM_KEY = "metamapper-test:claim:{}"

#: KEYS[1] the claim, ARGV[1] its token, ARGV[2] the database. The database is emptied
#: before the claim goes, both only if the claim is still this token's: nobody can claim
#: the database between the check and the flush, nor find it freed and still full.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('SELECT', ARGV[2])
redis.call('FLUSHDB')
redis.call('SELECT', 0)
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True)
class Claim:
    """A database :func:`claim` gave: its URL, and the token its claim key holds."""

    url: str
    token: str

    @property
    def server(self) -> str:
        return self.url.rpartition("/")[0]

    @property
    def db(self) -> int:
        return int(self.url.rpartition("/")[2])


def claim(candidates: Iterable[int], seconds: int, server: str = SERVER) -> Claim | None:
    """The first of ``candidates`` nobody holds, now claimed for ``seconds`` and emptied;
    None when every one is claimed."""
    token = uuid.uuid4().hex
    claims = redis.Redis.from_url(f"{server}/0")
    try:
        db = next((n for n in candidates
                   if claims.set(CLAIM_KEY.format(n), token, nx=True, ex=seconds)),
                  None)
    finally:
        claims.close()
    if db is None:
        return None
    held = Claim(f"{server}/{db}", token)
    client = redis.Redis.from_url(held.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return held


def release(held: Claim) -> bool:
    """Empty the database of ``held`` and give it back; False, touching neither, if its
    claim expired meanwhile (and the database may be another user's now)."""
    claims = redis.Redis.from_url(f"{held.server}/0")
    try:
        return bool(claims.eval(_RELEASE, 1, CLAIM_KEY.format(held.db), held.token, held.db))
    finally:
        claims.close()
