"""Retention state: when each manifest digest was first seen, run reports, schedule slots."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from service.store import key

RUN_TTL = 30 * 24 * 3600
SLOT_TTL = 2 * 24 * 3600


def pushed_key(repository: str) -> str:
    """The hash of manifest digest → first time the gateway saw it pushed (epoch seconds)."""
    return key("pushed", repository)


class RetentionStore:
    """Push times per repository, retention run reports, and claimed schedule slots."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    # -- push times ------------------------------------------------------------------------
    def mark_pushed(self, repository: str, digest: str, at: float | None = None) -> None:
        """Remember the first time a digest was pushed (a later push of the same bytes does
        not make it younger: it is the same content)."""
        self.r.hsetnx(pushed_key(repository), digest, repr(time.time() if at is None else at))

    def set_pushed(self, repository: str, times: dict[str, float]) -> None:
        """Record push times as given (imports, tests, the benchmark)."""
        if times:
            self.r.hset(pushed_key(repository), mapping={d: repr(t) for d, t in times.items()})

    def pushed(self, repository: str) -> dict[str, float]:
        """Every known digest of a repository and when it was first seen."""
        return {d: float(t) for d, t in self.r.hgetall(pushed_key(repository)).items()}

    def forget(self, repository: str, digests: list[str]) -> None:
        """Drop deleted digests (a new push of the same bytes is new again)."""
        if digests:
            self.r.hdel(pushed_key(repository), *digests)

    # -- runs ------------------------------------------------------------------------------
    def save_run(self, run: dict[str, Any]) -> None:
        """Store a run's record (created, progressing or finished)."""
        self.r.set(key("retention-run", run["id"]), json.dumps(run, separators=(",", ":")),
                   ex=RUN_TTL)

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run's record, or None."""
        raw = self.r.get(key("retention-run", run_id))
        return json.loads(raw) if raw else None

    # -- schedule --------------------------------------------------------------------------
    def claim_slot(self, policy: str, slot: str) -> bool:
        """True for the one caller that claims a policy's scheduled run at `slot`."""
        return bool(self.r.set(key("retention-slot", policy, slot), "1", nx=True, ex=SLOT_TTL))

    def lock(self, repository: str, timeout: float = 3600.0, wait: float = 600.0
             ) -> redis.lock.Lock:
        """One retention run at a time per repository (a run plans, then deletes)."""
        return self.r.lock(key("lock", "retention", repository), timeout=timeout,
                           blocking_timeout=wait)
