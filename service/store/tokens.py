"""API tokens: only a SHA-256 of each secret is stored; lookup by hash is O(1)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis

from service.store import key


def secret_hash(secret: str) -> str:
    """The stored form of a token secret (32+ random bytes need no slow hash)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    """Token metadata by id, and hash → id for authentication."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def create(self, meta: dict[str, Any], secret: str) -> None:
        """Store a token's metadata and the hash of its secret."""
        digest = secret_hash(secret)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key("tokens"), meta["id"], json.dumps({**meta, "hash": digest}))
        pipe.set(key("token-hash", digest), meta["id"])
        pipe.execute()

    def by_secret(self, secret: str) -> dict[str, Any] | None:
        """The token a presented secret belongs to, or None (revoked or unknown)."""
        token_id = self.r.get(key("token-hash", secret_hash(secret)))
        if token_id is None:
            return None
        raw = self.r.hget(key("tokens"), token_id)
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
