"""Redis databases claimed one user at a time (devenv.redis_claims), on the real Redis."""

from __future__ import annotations

import redis

from devenv import redis_claims


def _db(url: str) -> int:
    return int(url.rpartition("/")[2])


def _keys(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def _leave_behind(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.set("left", "behind")
    finally:
        client.close()


def test_a_claimed_database_is_nobody_elses_until_released_and_comes_back_empty(
    redis_url: str,
) -> None:
    # redis_url is a database the suite's fixture claimed through the same mechanism.
    taken = _db(redis_url)
    mine = redis_claims.claim([taken, *range(1, 256)], seconds=60)
    assert mine is not None and mine.db != taken
    try:
        assert redis_claims.claim([mine.db], seconds=60) is None
        _leave_behind(mine.url)
    finally:
        assert redis_claims.release(mine)
    again = redis_claims.claim([mine.db], seconds=60)
    assert again is not None and again.url == mine.url and again.token != mine.token
    try:
        assert _keys(again.url) == 0
    finally:
        redis_claims.release(again)


def test_a_claim_that_expired_releases_nothing_of_the_databases_next_holder(
    redis_url: str,
) -> None:
    first = redis_claims.claim(range(1, 256), seconds=60)
    assert first is not None
    claim_key = redis_claims.CLAIM_KEY.format(first.db)
    claims = redis.Redis.from_url(f"{first.server}/0")
    try:
        # Its expiry passes while its holder still runs; another user claims the database.
        claims.delete(claim_key)
        second = redis_claims.claim([first.db], seconds=60)
        assert second is not None and second.url == first.url
        try:
            _leave_behind(second.url)
            assert not redis_claims.release(first)
            assert _keys(second.url) == 1
            assert claims.get(claim_key) == second.token.encode()
            assert redis_claims.claim([first.db], seconds=60) is None
        finally:
            assert redis_claims.release(second)
        assert _keys(second.url) == 0 and claims.get(claim_key) is None
    finally:
        claims.close()
