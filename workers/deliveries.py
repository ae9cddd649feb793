"""Outgoing webhook deliveries: signed POSTs, every attempt recorded, retried with backoff."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import urllib3

from service.core import outbound
from service.core.deliveries import sign
from service.domain.durations import format_time
from service.domain.errors import InvalidRequest
from service.obs import metrics
from workers.context import services

log = logging.getLogger("tagwarden.deliveries")
MAX_ATTEMPTS = 5


class DeliveryFailed(Exception):
    """Raised so that RQ's Retry schedules the next attempt."""


def deliver(delivery_id: str) -> str:
    """One attempt at a delivery; raises DeliveryFailed to be retried."""
    svc = services()
    delivery = svc.subscriptions.delivery(delivery_id)
    if delivery is None or delivery["status"] == "delivered":
        return "nothing to do"
    sub = svc.subscriptions.get(delivery["subscription_id"])
    if sub is None:
        delivery["status"] = "cancelled"
        svc.subscriptions.save_delivery(delivery)
        metrics.delivery("cancelled")
        return "subscription deleted"
    body = delivery["payload"].encode()
    attempt = {"at": format_time(datetime.now(UTC)), "status": None, "error": None}
    try:
        # re-checked at every attempt (DNS may change), and the connection goes to exactly
        # the addresses this check approved, never to a second answer of the resolver
        target = outbound.vet(sub["url"], svc.settings.outbound_allowlist)
        status, answer = outbound.post(
            target, body, timeout=svc.settings.delivery_timeout,
            headers={"Content-Type": "application/json", "User-Agent": "tagwarden-webhooks/1",
                     "X-Tagwarden-Event": delivery["event"],
                     "X-Tagwarden-Delivery": delivery_id,
                     "X-Tagwarden-Signature": sign(sub["secret"], body)},
        )
        attempt["status"] = status
        attempt["response"] = answer.decode("utf-8", "replace")[:500]
        ok = 200 <= status < 300
    except InvalidRequest as exc:
        attempt["error"], ok = exc.message, False
    except urllib3.exceptions.HTTPError as exc:
        attempt["error"], ok = type(exc).__name__, False
    delivery["attempts"].append(attempt)
    final = len(delivery["attempts"]) >= delivery.get("max_attempts", MAX_ATTEMPTS)
    delivery["status"] = "delivered" if ok else ("failed" if final else "retrying")
    metrics.delivery(delivery["status"])
    svc.subscriptions.save_delivery(delivery)
    if not ok and not final:
        raise DeliveryFailed(f"attempt {len(delivery['attempts'])} failed: "
                             f"{attempt['error'] or attempt['status']}")
    return delivery["status"]
