"""Registry webhooks in, recorded events, outgoing subscriptions and their deliveries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import g, request
from flask_smorest import Blueprint

from service.core import jobs, webhooks
from service.core.outbound import check_url
from service.domain.durations import format_time
from service.domain.errors import NotFound
from service.http.api import caller, listing_scope, svc
from service.http.api.meta import endpoint
from service.http.schemas.common import PageQueryArgsSchema
from service.http.schemas.events import (
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
# Only admins see where a subscription delivers (a URL may carry a credential in its path or
# query) and the bodies sent and received; the secret is never shown to anyone.
SUBSCRIPTION_PRIVATE = ("url", "secret")


def _globs(sub: dict[str, Any]) -> list[str]:
    return sub.get("repositories") or ["*"]


def _shown_subscription(sub: dict[str, Any]) -> dict[str, Any]:
    hidden = ("secret",) if caller().at_least("admin") else SUBSCRIPTION_PRIVATE
    return {k: v for k, v in sub.items() if k not in hidden}


def _shown_delivery(delivery: dict[str, Any]) -> dict[str, Any]:
    if caller().at_least("admin"):
        return delivery
    attempts = [{k: v for k, v in a.items() if k != "response"}
                for a in delivery.get("attempts") or []]
    return {**{k: v for k, v in delivery.items() if k != "payload"}, "attempts": attempts}



@blp.route("/webhooks/registry", methods=["POST"])
@endpoint(role=None, scope="", rate=None, errors=(400, 401, 413, 415, 503))
# One media type documented, though webhooks.CONTENT_TYPES accepts application/json too: for
# a required body with two, openapi-python-client (0.29.1) annotates `body` with `Unset`
# without importing it and the generated module fails to import (its issue #1451).
# The envelope is one named schema (an inline `object` makes client generators emit a model
# per media type, of the same name), and the body is required.
@blp.doc(security=[{"webhookToken": []}], requestBody={
    "description": "The registry's notification envelope; `application/json` is accepted too.",
    "content": {"application/vnd.docker.distribution.events.v1+json": {
        "schema": {"$ref": "#/components/schemas/RegistryNotification"}}},
    "required": True})
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
@endpoint(role="reader", scope="repository")
@blp.arguments(EventQueryArgsSchema, location="query")
@blp.response(200, EventPageSchema)
def list_events(args: dict[str, Any]) -> dict[str, Any]:
    """Recorded registry events and findings, newest first."""
    items, cursor = svc().events.list(args.get("repository"), args.get("action"),
                                      args["limit"], args.get("cursor"), listing_scope())
    return {"items": items, "next_cursor": cursor}


@blp.route("/subscriptions", methods=["POST"])
@endpoint(role="admin", scope="", audit="subscription.create", errors=(400,))
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
@endpoint(role="reader", scope="repository")
@blp.response(200, SubscriptionPageSchema)
def list_subscriptions() -> dict[str, Any]:
    """The subscriptions whose repositories the caller's token covers (URL for admins only)."""
    subs = [s for s in svc().subscriptions.all() if caller().sees_globs(_globs(s))]
    return {"items": [_shown_subscription(s) for s in subs], "next_cursor": None}


@blp.route("/subscriptions/<string:sub_id>", methods=["DELETE"])
@endpoint(role="admin", scope="", audit="subscription.delete")
@blp.response(204)
def delete_subscription(sub_id: str) -> None:
    """Remove a subscription."""
    if not svc().subscriptions.delete(sub_id):
        raise NotFound(f"subscription {sub_id!r} not found")


@blp.route("/subscriptions/<string:sub_id>/deliveries", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(PageQueryArgsSchema, location="query")
@blp.response(200, DeliveryPageSchema)
def list_deliveries(args: dict[str, Any], sub_id: str) -> dict[str, Any]:
    """A subscription's deliveries: status, attempts, last response (bodies: admins only)."""
    sub = svc().subscriptions.get(sub_id)
    if sub is None or not caller().sees_globs(_globs(sub)):
        raise NotFound(f"subscription {sub_id!r} not found")
    items, cursor = svc().subscriptions.deliveries(sub_id, args["limit"], args.get("cursor"),
                                                   listing_scope())
    return {"items": [_shown_delivery(d) for d in items], "next_cursor": cursor}


@blp.route("/subscriptions/<string:sub_id>/deliveries/<string:delivery_id>/redeliver",
           methods=["POST"])
@endpoint(role="admin", scope="", audit="delivery.redeliver")
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
