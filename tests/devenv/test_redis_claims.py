"""Redis databases claimed one user at a time (devenv.redis_claims), on the real Redis."""

from __future__ import annotations

import redis

from devenv import redis_claims


def _db(url: str) -> int:
    return int(url.rpartition("/")[2])


def test_a_claimed_database_is_nobody_elses_until_released_and_comes_back_empty(
    redis_url: str,
) -> None:
    # redis_url is a database the suite's fixture claimed through the same mechanism.
    taken = _db(redis_url)
    mine = redis_claims.claim([taken, *range(1, 256)], seconds=60)
    assert mine is not None and _db(mine) != taken
    try:
        assert redis_claims.claim([_db(mine)], seconds=60) is None
        client = redis.Redis.from_url(mine)
        client.set("left", "behind")
        client.close()
    finally:
        redis_claims.release(mine)
    again = redis_claims.claim([_db(mine)], seconds=60)
    assert again == mine
    try:
        client = redis.Redis.from_url(again)
        assert client.dbsize() == 0
        client.close()
    finally:
        redis_claims.release(again)
