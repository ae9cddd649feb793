"""API tokens: only a SHA-256 of each secret is stored; lookup by hash is O(1)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

import redis

from service.store import key


def secret_hash(secret: str) -> str:
    """The stored form of a token secret (32+ random bytes need no slow hash)."""
    return hashlib.sha256(secret.encode()).hexdigest()


# Tokens remembered per process for use while Redis is unreachable (least recently used go).
CACHE_SIZE = 10_000
# Every gateway process reloads the token table this often (seconds), so that it can verify,
# during an outage, tokens that other processes served and it never saw.
ROSTER_REFRESH = 15.0
# A secret's hash → its token's metadata in one round trip (every authenticated request
# makes it): KEYS token-hash:<hash>, tokens.
LOOKUP = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('HGET', KEYS[2], id)
"""


class VerifiedCache:
    """Bounded in-process memory of tokens Redis vouched for: secret hash → (metadata, when
    Redis last confirmed it). Redis stays the authority while it answers (a revocation takes
    effect at once); the memory only answers while Redis does not, for `stale_ttl` seconds
    after the token's last confirmation."""

    def __init__(self, stale_ttl: float, size: int = CACHE_SIZE) -> None:
        self.stale_ttl = stale_ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()
        self._lock = threading.Lock()

    def confirmed(self, digest: str, meta: dict[str, Any] | None) -> None:
        """Redis answered for this hash: remember the token, or forget it (revoked)."""
        with self._lock:
            if meta is None:
                self._entries.pop(digest, None)
                return
            self._entries[digest] = (meta, time.monotonic())
            self._entries.move_to_end(digest)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def stale(self, digest: str) -> dict[str, Any] | None:
        """The remembered token, if Redis confirmed it within `stale_ttl` seconds."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None or time.monotonic() - entry[1] > self.stale_ttl:
                return None
            self._entries.move_to_end(digest)
            return entry[0]

    def replace(self, entries: dict[str, dict[str, Any]]) -> None:
        """A fresh copy of the whole token table (tokens not in it are forgotten)."""
        now = time.monotonic()
        with self._lock:
            self._entries = OrderedDict((digest, (meta, now)) for digest, meta in entries.items())

    def __len__(self) -> int:
        return len(self._entries)


class TokenStore:
    """Token metadata by id, and hash → id for authentication."""

    def __init__(self, client: redis.Redis, stale_ttl: float = 0) -> None:
        self.r = client
        self.cache = VerifiedCache(stale_ttl)
        self._lookup_script = client.register_script(LOOKUP)

    def create(self, meta: dict[str, Any], secret: str) -> None:
        """Store a token's metadata and the hash of its secret."""
        digest = secret_hash(secret)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key("tokens"), meta["id"], json.dumps({**meta, "hash": digest}))
        pipe.set(key("token-hash", digest), meta["id"])
        pipe.execute()

    def by_secret(self, secret: str) -> dict[str, Any] | None:
        """The token a presented secret belongs to, or None (revoked or unknown). While
        Redis is unreachable, a token it confirmed within the stale TTL still counts; any
        other raises the Redis error (the caller cannot tell yes from no)."""
        digest = secret_hash(secret)
        try:
            meta = self._lookup(digest)
        except redis.RedisError:
            meta = self.cache.stale(digest)
            if meta is None:
                raise
            return meta
        self.cache.confirmed(digest, meta)
        return meta

    def refresh_cache(self) -> None:
        """Reload every token into the cache (when the table fits in it)."""
        if self.r.hlen(key("tokens")) > self.cache.size:
            return  # a large table: only the tokens this process verified are remembered
        metas = [json.loads(v) for v in self.r.hgetall(key("tokens")).values()]
        self.cache.replace({m["hash"]: m for m in metas if m.get("hash")})

    def keep_warm(self, interval: float = ROSTER_REFRESH) -> threading.Thread:
        """Refresh the cache every `interval` seconds in a daemon thread (Redis errors are
        skipped: the last copy keeps serving for the stale TTL)."""

        def run() -> None:
            while True:
                try:
                    self.refresh_cache()
                except redis.RedisError:
                    pass
                time.sleep(interval)

        thread = threading.Thread(target=run, name="token-cache", daemon=True)
        thread.start()
        return thread

    def _lookup(self, digest: str) -> dict[str, Any] | None:
        raw = self._lookup_script(keys=[key("token-hash", digest), key("tokens")], client=self.r)
        return json.loads(raw) if raw else None

    def get(self, token_id: str) -> dict[str, Any] | None:
        """One token's metadata."""
        raw = self.r.hget(key("tokens"), token_id)
        return json.loads(raw) if raw else None

    def all(self) -> list[dict[str, Any]]:
        """Every token's metadata, oldest first."""
        tokens = [json.loads(v) for v in self.r.hgetall(key("tokens")).values()]
        return sorted(tokens, key=lambda t: (t["created_at"], t["id"]))

    def delete(self, token_id: str) -> bool:
        """Revoke a token at once."""
        meta = self.get(token_id)
        if meta is None:
            return False
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(key("tokens"), token_id)
        pipe.delete(key("token-hash", meta["hash"]))
        pipe.execute()
        return True
