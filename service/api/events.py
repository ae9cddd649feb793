"""Registry webhooks in, recorded events, outgoing subscriptions and their deliveries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import g, request
from flask_smorest import Blueprint

from service import jobs, webhooks
from service.api import svc
from service.domain.durations import format_time
from service.domain.errors import NotFound
from service.outbound import check_url
from service.schemas.common import PageQueryArgsSchema
from service.schemas.events import (
    DeliveryPageSchema,
    DeliverySchema,
    EventPageSchema,
    EventQueryArgsSchema,
    SubscriptionCreateSchema,
    SubscriptionPageSchema,
    SubscriptionSchema,
    WebhookResultSchema,
)

blp = Blueprint("events", __name__, url_prefix="/api/v1",
                description="Registry events, subscriptions and deliveries")



@blp.route("/webhooks/registry", methods=["POST"])
@blp.doc(security=[{"webhookToken": []}], requestBody={"content": {
    "application/vnd.docker.distribution.events.v1+json": {"schema": {"type": "object"}},
    "application/json": {"schema": {"type": "object"}}}})
@blp.response(200, WebhookResultSchema)
def registry_webhook() -> dict[str, int]:
    """Receive the registry's notification envelope (deduplicated by event id)."""
    webhooks.authenticate(svc(), request.headers.get("Authorization"))
    limit = svc().settings.webhook_max_bytes
    if (request.content_length or 0) > limit:
        raise webhooks.PayloadTooLarge(f"body over {limit} bytes")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise webhooks.PayloadTooLarge(f"body over {limit} bytes")
    return webhooks.receive(svc(), request.headers.get("Content-Type", ""), body)


@blp.route("/events", methods=["GET"])
@blp.arguments(EventQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
def list_events(args: dict[str, Any]) -> dict[str, Any]:
    """Recorded registry events and findings, newest first."""
    items, cursor = svc().events.list(args.get("repository"), args.get("action"),
                                      args["limit"], args.get("cursor"))
    return {"items": items, "next_cursor": cursor}


@blp.route("/subscriptions", methods=["POST"])
@blp.arguments(SubscriptionCreateSchema)
@blp.response(201, SubscriptionSchema)
def create_subscription(body: dict[str, Any]) -> dict[str, Any]:
    """Subscribe an HTTP endpoint to event types (signed with the secret)."""
    check_url(body["url"], svc().settings.outbound_allowlist)
    sub = {"id": "sub_" + uuid.uuid4().hex, "created_at": format_time(datetime.now(UTC)),
           "actor": g.get("actor_name"), **body}
    svc().subscriptions.put(sub)
    return sub


@blp.route("/subscriptions", methods=["GET"])
@blp.response(200, SubscriptionPageSchema)
def list_subscriptions() -> dict[str, Any]:
    """Every subscription."""
    return {"items": svc().subscriptions.all(), "next_cursor": None}


@blp.route("/subscriptions/<string:sub_id>", methods=["DELETE"])
@blp.response(204)
def delete_subscription(sub_id: str) -> None:
    """Remove a subscription."""
    if not svc().subscriptions.delete(sub_id):
        raise NotFound(f"subscription {sub_id!r} not found")


@blp.route("/subscriptions/<string:sub_id>/deliveries", methods=["GET"])
@blp.arguments(PageQueryArgsSchema, location="query")
@blp.response(200, DeliveryPageSchema)
def list_deliveries(args: dict[str, Any], sub_id: str) -> dict[str, Any]:
    """A subscription's deliveries with status, attempts and last response."""
    if svc().subscriptions.get(sub_id) is None:
        raise NotFound(f"subscription {sub_id!r} not found")
    items, cursor = svc().subscriptions.deliveries(sub_id, args["limit"], args.get("cursor"))
    return {"items": items, "next_cursor": cursor}


@blp.route("/subscriptions/<string:sub_id>/deliveries/<string:delivery_id>/redeliver",
           methods=["POST"])
@blp.response(202, DeliverySchema)
def redeliver(sub_id: str, delivery_id: str) -> dict[str, Any]:
    """Send a delivery again (five more attempts)."""
    delivery = svc().subscriptions.delivery(delivery_id)
    if delivery is None or delivery["subscription_id"] != sub_id:
        raise NotFound(f"delivery {delivery_id!r} not found for subscription {sub_id!r}")
    delivery.update(status="pending", max_attempts=len(delivery["attempts"]) + 5)
    svc().subscriptions.save_delivery(delivery)
    settings = svc().settings
    jobs.enqueue_delivery(svc().queue, delivery_id, settings.delivery_backoff,
                          settings.delivery_timeout)
    return delivery
