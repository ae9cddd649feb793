"""The audit trail: every mutating call, append-only."""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key
from service.store.pagination import page

MAXLEN = 5_000_000


class AuditStore:
    """Append-only audit entries (a Redis stream), newest first when read."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def append(self, entry: dict[str, Any]) -> None:
        """Record one entry."""
        self.r.xadd(key("audit"), {"d": json.dumps(entry, separators=(",", ":"))},
                    maxlen=MAXLEN, approximate=True)

    def list(self, filters: dict[str, str], limit: int, cursor: str | None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of entries matching every given filter."""
        def keep(entry: dict[str, Any]) -> bool:
            for name, wanted in filters.items():
                value = entry["actor"].get("name") if name == "actor" else entry.get(name)
                if name == "actor" and wanted == entry["actor"].get("id"):
                    continue
                if value != wanted:
                    return False
            return True

        return page(self.r, key("audit"), limit, cursor, keep if filters else None)
