"""The audit trail: every mutating call, append-only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import redis

from service.domain.durations import format_time
from service.store import key
from service.store.pagination import Visible, page

MAXLEN = 5_000_000


class AuditStore:
    """Append-only audit entries (a Redis stream), newest first when read."""

    def __init__(self, client: redis.Redis, max_len: int = MAXLEN) -> None:
        self.r = client
        self.max_len = max_len  # approximate (XADD MAXLEN ~)

    def record(self, action: str, actor: tuple[str | None, str | None],
               target: dict[str, Any], outcome: str, status: int,
               request_id: str | None) -> None:
        """Append one entry: actor is (token id, token name); never a secret, no bodies."""
        entry = {
            "id": uuid.uuid4().hex, "time": format_time(datetime.now(UTC)), "action": action,
            "actor": {"id": actor[0], "name": actor[1]}, "target": target,
            "outcome": outcome, "status": status, "repository": target.get("repository"),
            "request_id": request_id,
        }
        self.r.xadd(key("audit"), {"d": json.dumps(entry, separators=(",", ":"))},
                    maxlen=self.max_len, approximate=True)

    def list(self, filters: dict[str, str], limit: int, cursor: str | None,
             visible: Visible | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of entries matching every given filter, about the repositories `visible`
        accepts."""
        def keep(entry: dict[str, Any]) -> bool:
            if visible is not None and not visible(entry.get("repository")):
                return False
            for name, wanted in filters.items():
                value = entry["actor"].get("name") if name == "actor" else entry.get(name)
                if name == "actor" and wanted == entry["actor"].get("id"):
                    continue
                if value != wanted:
                    return False
            return True

        return page(self.r, key("audit"), limit, cursor,
                    keep if filters or visible is not None else None)
