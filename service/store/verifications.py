"""Verification evidence: check results recorded against a digest in an environment.

Records are immutable and kept in listing streams; the newest result of each check per
(repository, digest, environment) sits in one hash, written in the same transaction as the
streams, so "newest" is the order the results were recorded in.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key
from service.store.pagination import Visible, both, page

STREAM_MAXLEN = 1_000_000


def _latest_key(repository: str, digest: str, environment: str) -> str:
    return key("verifications", "latest", repository, digest, environment)


class VerificationStore:
    """Verification results in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def add(self, record: dict[str, Any]) -> None:
        """Record a result: listed, and the newest of its check for the digest there."""
        data = json.dumps(record, separators=(",", ":"), sort_keys=True)
        pipe = self.r.pipeline(transaction=True)
        for stream in (key("verifications", "all"),
                       key("verifications", "repo", record["repository"])):
            pipe.xadd(stream, {"d": data}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.hset(_latest_key(record["repository"], record["digest"], record["environment"]),
                  record["name"], data)
        pipe.execute()

    def latest(self, repository: str, digest: str, environment: str
               ) -> dict[str, dict[str, Any]]:
        """{check name: its newest result} for a digest in an environment."""
        raw = self.r.hgetall(_latest_key(repository, digest, environment))
        return {name: json.loads(item) for name, item in raw.items()}

    def list(self, repository: str | None, digest: str | None, environment: str | None,
             limit: int, cursor: str | None, visible: Visible | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """Results newest first, filtered, of the repositories `visible` accepts."""
        stream = (key("verifications", "repo", repository) if repository
                  else key("verifications", "all"))

        def wanted(item: dict[str, Any]) -> bool:
            return ((environment is None or item["environment"] == environment)
                    and (digest is None or item["digest"] == digest))

        keep = None if environment is None and digest is None else wanted
        seen = (lambda v: visible(v.get("repository"))) if visible else None
        return page(self.r, stream, limit, cursor, both(keep, seen))
