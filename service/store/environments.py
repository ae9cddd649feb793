"""Environment pointers: which digest each environment of a repository points to."""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key


class EnvironmentStore:
    """Read side of the pointers (the promotion store moves them atomically)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def pointers(self, repository: str) -> dict[str, dict[str, Any]]:
        """{environment: {"digest", "promotion_id", "promoted_at"}} as now."""
        raw = self.r.hgetall(key("env", repository))
        return {env: json.loads(value) for env, value in raw.items()}

    def digests(self, repository: str) -> dict[str, str]:
        """{environment: digest} as now."""
        return {env: p["digest"] for env, p in self.pointers(repository).items()}
