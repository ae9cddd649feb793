"""Policies in Redis, with a per-process cache invalidated by a version counter."""

from __future__ import annotations

import json
import threading

import redis

from service.domain.policy import Policy
from service.domain.schemas.policy import dump_policy, load_policy
from service.store import key


class PolicyStore:
    """Named policies; `all()` costs one Redis round trip while nothing changed."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._cache: tuple[str | None, tuple[Policy, ...]] = ("", ())
        self._lock = threading.Lock()

    def put(self, policy: Policy) -> bool:
        """Create or replace a policy; True when it was new."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key("policies"), policy.name, json.dumps(dump_policy(policy)))
        pipe.incr(key("policies", "version"))
        created, _ = pipe.execute()
        return bool(created)

    def get(self, name: str) -> Policy | None:
        """One stored policy, or None."""
        raw = self.r.hget(key("policies"), name)
        return load_policy(json.loads(raw)) if raw else None

    def delete(self, name: str) -> bool:
        """Remove a policy; False when there was none."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(key("policies"), name)
        pipe.incr(key("policies", "version"))
        removed, _ = pipe.execute()
        return bool(removed)

    def all(self) -> tuple[Policy, ...]:
        """Every stored policy sorted by name (cached until the version changes)."""
        version = self.r.get(key("policies", "version"))
        cached_version, policies = self._cache
        if version == cached_version:
            return policies
        with self._lock:
            pipe = self.r.pipeline(transaction=True)
            pipe.get(key("policies", "version"))
            pipe.hgetall(key("policies"))
            version, raw = pipe.execute()
            loaded = tuple(
                sorted((load_policy(json.loads(v)) for v in raw.values()), key=lambda p: p.name)
            )
            self._cache = (version, loaded)
            return loaded

    def seed(self, policies: list[Policy]) -> None:
        """Store policies from the policy file (replacing those of the same name)."""
        for policy in policies:
            self.put(policy)
