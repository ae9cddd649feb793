"""The token cache that keeps pulls working while Redis is unreachable."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from service.store.tokens import TokenStore, VerifiedCache, secret_hash


class Down(fakeredis.FakeRedis):
    """A client whose every call fails like an unreachable Redis."""

    def execute_command(self, *args, **kwargs):
        raise redis.ConnectionError("down")


def _store(stale_ttl: float) -> tuple[TokenStore, fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis(decode_responses=True)
    store = TokenStore(client, stale_ttl)
    store.create({"id": "tok_1", "name": "reader", "role": "reader",
                  "created_at": "2026-12-01T00:00:00Z"}, "tw_secret_one")
    return store, client


def test_a_confirmed_token_works_while_redis_is_down_and_others_raise():
    store, _ = _store(stale_ttl=3600)
    assert store.by_secret("tw_secret_one")["id"] == "tok_1"
    store.r = Down()
    assert store.by_secret("tw_secret_one")["id"] == "tok_1"
    with pytest.raises(redis.ConnectionError):
        store.by_secret("tw_never_seen")


def test_no_stale_use_after_the_ttl_or_with_ttl_zero():
    store, _ = _store(stale_ttl=0)
    assert store.by_secret("tw_secret_one") is not None
    store.r = Down()
    store.cache.stale_ttl = -1  # the confirmation is older than the window
    with pytest.raises(redis.ConnectionError):
        store.by_secret("tw_secret_one")


def test_a_revoked_token_is_forgotten_at_once():
    store, _ = _store(stale_ttl=3600)
    assert store.by_secret("tw_secret_one") is not None
    assert store.delete("tok_1")
    assert store.by_secret("tw_secret_one") is None
    store.r = Down()
    with pytest.raises(redis.ConnectionError):
        store.by_secret("tw_secret_one")


def test_the_refresh_loads_tokens_this_process_never_verified_and_drops_revoked_ones():
    store, client = _store(stale_ttl=3600)
    other = TokenStore(client, 3600)
    other.create({"id": "tok_2", "name": "ci", "role": "ci",
                  "created_at": "2026-12-01T00:00:01Z"}, "tw_secret_two")
    store.refresh_cache()
    assert store.cache.stale(secret_hash("tw_secret_two"))["id"] == "tok_2"
    other.delete("tok_2")
    store.refresh_cache()
    assert store.cache.stale(secret_hash("tw_secret_two")) is None
    assert store.cache.stale(secret_hash("tw_secret_one"))["id"] == "tok_1"


def test_the_cache_is_bounded():
    cache = VerifiedCache(stale_ttl=3600, size=3)
    for i in range(5):
        cache.confirmed(f"h{i}", {"id": str(i)})
    assert len(cache) == 3
    assert cache.stale("h0") is None and cache.stale("h4") == {"id": "4"}
