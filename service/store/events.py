"""Recorded registry events and gateway findings (push.denied, drift.detected, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from service.store import key
from service.store.pagination import Visible, both, page

MAXLEN = 1_000_000


def serialize(event: dict[str, Any]) -> str:
    """The stored form of an event."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


class EventStore:
    """Append-only event log with per-repository and per-action indexes (Redis streams)."""

    def __init__(self, client: redis.Redis, max_len: int = MAXLEN) -> None:
        self.r = client
        self.max_len = max_len  # per stream, approximate (XADD MAXLEN ~)

    def streams(self, event: dict[str, Any]) -> list[str]:
        streams = [key("events")]
        if event.get("repository"):
            streams.append(key("events", "repo", event["repository"]))
        if event.get("action"):
            streams.append(key("events", "action", event["action"]))
        return streams

    def record(self, event: dict[str, Any], pipe: Any = None) -> None:
        """Append one event to the log and its indexes (in `pipe` when given)."""
        data = serialize(event)
        target = pipe if pipe is not None else self.r.pipeline(transaction=True)
        for stream in self.streams(event):
            target.xadd(stream, {"d": data}, maxlen=self.max_len, approximate=True)
        if pipe is None:
            target.execute()

    def list(
        self, repository: str | None, action: str | None, limit: int, cursor: str | None,
        visible: Visible | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of events, newest first, filtered by repository and/or action, and to the
        repositories `visible` accepts (a mount's source repository included)."""
        if repository:
            stream = key("events", "repo", repository)
            keep = (lambda e: e.get("action") == action) if action else None
        elif action:
            stream, keep = key("events", "action", action), None
        else:
            stream, keep = key("events"), None
        return page(self.r, stream, limit, cursor, both(keep, _seen(visible)))

    def count(self, name: str, amount: int = 1) -> None:
        """Bump a named counter (skipped or malformed webhook events, ...)."""
        self.r.hincrby(key("counters"), name, amount)

    def counters(self) -> dict[str, int]:
        """Every named counter."""
        return {k: int(v) for k, v in self.r.hgetall(key("counters")).items()}


def _seen(visible: Visible | None) -> Callable[[dict[str, Any]], bool] | None:
    if visible is None:
        return None
    return lambda e: visible(e.get("repository")) and (
        not e.get("from_repository") or visible(e["from_repository"]))
