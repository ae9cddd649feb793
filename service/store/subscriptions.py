"""Outgoing-webhook subscriptions and their deliveries."""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key
from service.store.pagination import Visible, page

DELIVERY_TTL = 30 * 24 * 3600


class SubscriptionStore:
    """Subscriptions (secrets kept for signing, never returned) and delivery records."""

    def __init__(self, client: redis.Redis, max_len: int = 100_000) -> None:
        self.r = client
        self.max_len = max_len  # delivery index entries kept per subscription (approximate)

    def put(self, sub: dict[str, Any]) -> None:
        """Create a subscription."""
        self.r.hset(key("subscriptions"), sub["id"], json.dumps(sub))

    def get(self, sub_id: str) -> dict[str, Any] | None:
        """One subscription including its secret (for the delivery job only)."""
        raw = self.r.hget(key("subscriptions"), sub_id)
        return json.loads(raw) if raw else None

    def delete(self, sub_id: str) -> bool:
        """Remove a subscription (its delivery records expire on their own)."""
        return bool(self.r.hdel(key("subscriptions"), sub_id))

    def all(self) -> list[dict[str, Any]]:
        """Every subscription, oldest first."""
        subs = [json.loads(v) for v in self.r.hgetall(key("subscriptions")).values()]
        return sorted(subs, key=lambda s: (s["created_at"], s["id"]))

    def add_delivery(self, delivery: dict[str, Any]) -> None:
        """Record a new delivery and index it under its subscription."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(key("delivery", delivery["id"]), json.dumps(delivery), ex=DELIVERY_TTL)
        pipe.xadd(key("deliveries", delivery["subscription_id"]), {"d": json.dumps(
            {"id": delivery["id"]})}, maxlen=self.max_len, approximate=True)
        pipe.execute()

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery with its attempts."""
        raw = self.r.get(key("delivery", delivery_id))
        return json.loads(raw) if raw else None

    def save_delivery(self, delivery: dict[str, Any]) -> None:
        """Store a delivery's new status and attempts."""
        self.r.set(key("delivery", delivery["id"]), json.dumps(delivery), ex=DELIVERY_TTL)

    def deliveries(self, sub_id: str, limit: int, cursor: str | None,
                   visible: Visible | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """A page of a subscription's deliveries, newest first, of events about the
        repositories `visible` accepts."""
        keep = (lambda d: visible(delivery_repository(d))) if visible else None
        return page(self.r, key("deliveries", sub_id), limit, cursor, keep, load=self._load)

    def _load(self, refs: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        raw = self.r.mget([key("delivery", ref["id"]) for ref in refs])
        return [json.loads(r) if r else None for r in raw]


def delivery_repository(delivery: dict[str, Any]) -> str | None:
    """The repository of the event a delivery carries (inside its stored payload)."""
    try:
        body = json.loads(delivery.get("payload") or "{}")
    except ValueError:
        return None
    repository = body.get("repository") if isinstance(body, dict) else None
    return repository if isinstance(repository, str) else None
