"""The per-repository streams a post-mortem timeline merges, read oldest first by time."""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key

# source name -> (stream key parts after the repository is appended, record key family)
SOURCES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "promotions": (("history", "repo"), None),
    "events": (("events", "repo"), None),
    "scans": (("scans", "repo"), "scan"),
    "approvals": (("approvals", "repo"), "approval"),
    "verifications": (("verifications", "repo"), None),
}


class TimelineSources:
    """Reads one source of one repository forward in time."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def read(self, source: str, repository: str, after: str | None, since_ms: int,
             until_ms: int, count: int) -> list[tuple[str, dict[str, Any]]]:
        """(stream id, record) after `after` (exclusive; else from `since_ms`), up to
        `until_ms`, oldest first; records of references that expired are left out."""
        parts, family = SOURCES[source]
        lower = f"({after}" if after else str(max(since_ms, 0))
        batch = self.r.xrange(key(*parts, repository), min=lower, max=str(until_ms),
                              count=count)
        entries = [(entry_id, json.loads(fields["d"])) for entry_id, fields in batch]
        if family is None or not entries:
            return entries
        raw = self.r.mget([key(family, ref["id"]) for _, ref in entries])
        # an expired record keeps its place (None): the cursor still moves past it
        return [(entry_id, json.loads(value) if value else {"_gone": ref["id"]})
                for (entry_id, ref), value in zip(entries, raw, strict=True)]
