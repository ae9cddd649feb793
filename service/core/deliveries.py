"""Outgoing notifications: fan an event out to matching subscriptions as signed deliveries."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from service.core import jobs
from service.domain.durations import format_time
from service.services import Services

EVENT_TYPES = ("promotion.succeeded", "promotion.denied", "rollback.succeeded",
               "scan.completed", "scan.failed", "push.denied", "drift.detected",
               "approval.granted", "approval.withdrawn", "retention.deleted",
               "hotfix.succeeded", "restore.reconciled")
LINKS = {"promotion.succeeded": "promotions", "rollback.succeeded": "promotions",
         "hotfix.succeeded": "promotions",
         "scan.completed": "scans", "scan.failed": "scans"}


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(svc: Services, event_type: str, data: dict[str, Any], delivery_id: str
            ) -> dict[str, Any]:
    """What a subscriber receives: the essentials on top, the full record in `data`."""
    link = None
    if event_type in LINKS and data.get("id"):
        base = svc.settings.public_url or ""
        link = f"{base}/api/v1/{LINKS[event_type]}/{data['id']}"
    return {
        "event": event_type, "delivery": delivery_id,
        "timestamp": format_time(datetime.now(UTC)),
        "repository": data.get("repository"), "environment": data.get("environment"),
        "digest": data.get("digest") or data.get("found_digest"),
        "previous_digest": data.get("previous_digest") or data.get("expected_digest"),
        "tags": data.get("tags") or ([data["tag"]] if data.get("tag") else []),
        "actor": data.get("actor"), "link": link, "data": data,
    }


def matches(sub: dict[str, Any], event_type: str, repository: str | None) -> bool:
    """Whether a subscription wants this event."""
    if event_type not in sub["events"]:
        return False
    globs = sub.get("repositories") or ["*"]
    return repository is None or any(fnmatch.fnmatchcase(repository, g) for g in globs)


def fan_out(svc: Services, event_type: str, data: dict[str, Any]) -> list[str]:
    """Create and queue one delivery per matching subscription; returns their ids."""
    ids = []
    for sub in svc.subscriptions.all():
        if not matches(sub, event_type, data.get("repository")):
            continue
        delivery_id = "dlv_" + uuid.uuid4().hex
        body = payload(svc, event_type, data, delivery_id)
        svc.subscriptions.add_delivery({
            "id": delivery_id, "subscription_id": sub["id"], "event": event_type,
            "payload": json.dumps(body, separators=(",", ":"), sort_keys=True),
            "status": "pending", "attempts": [], "created_at": body["timestamp"],
        })
        jobs.enqueue_delivery(svc.queue, delivery_id, svc.settings.delivery_backoff,
                              svc.settings.delivery_timeout)
        ids.append(delivery_id)
    return ids
