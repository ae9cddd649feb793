"""Promotions, rollbacks, history and environments."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_smorest import Blueprint

from service.core import history, promotions
from service.domain.errors import InvalidRequest, NotFound
from service.http.api import check_visible, listing_scope, svc
from service.http.api.meta import endpoint
from service.http.schemas.promotions import (
    EnvironmentsQueryArgsSchema,
    EnvironmentsSchema,
    PromotionPageSchema,
    PromotionQueryArgsSchema,
    PromotionRequestSchema,
    PromotionSchema,
    RollbackRequestSchema,
)

blp = Blueprint("promotions", __name__, url_prefix="/api/v1",
                description="Promotions, rollbacks, history and environments")
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REPLAY_HEADERS = {REPLAYED_HEADER: {
    "description": "`true` when this is the first answer to the same Idempotency-Key and body, "
                   "replayed: nothing was changed by this request",
    "schema": {"type": "string", "enum": ["true"]}}}

def idempotency_key() -> str | None:
    """The Idempotency-Key header, validated, scoped to the caller."""
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not (1 <= len(value) <= 200 and value.isascii() and value.isprintable()):
        raise InvalidRequest("Idempotency-Key must be 1-200 printable ASCII characters",
                             errors={IDEMPOTENCY_HEADER: ["invalid"]})
    return f"{g.get('actor_id') or 'anonymous'}:{value}"


@blp.route("/promotions", methods=["POST"])
@endpoint(role="ci", scope="repository+environment", audit="promotion.create", metric="promotion",
          idempotent=True, errors=(400, 404, 409, 502), waits_for_replicas=True)
@blp.arguments(PromotionRequestSchema)
@blp.response(201, PromotionSchema, headers=REPLAY_HEADERS)
@blp.alt_response(200, schema=PromotionSchema, description="dry run: nothing changed")
def create_promotion(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Promote a digest (by tag, digest or source environment) into an environment."""
    status, record, replayed = promotions.promote(svc(), body, g.get("actor_name"),
                                                  idempotency_key())
    if record.get("dry_run") and not record.get("allowed"):
        g.audit_outcome = "denied"  # nothing changed, but the policy said no
    return record, status, replay_headers(replayed)


def replay_headers(replayed: bool) -> dict[str, str]:
    """`Idempotent-Replayed: true` on an answer replayed from an Idempotency-Key."""
    return {REPLAYED_HEADER: "true"} if replayed else {}


@blp.route("/promotions", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(PromotionQueryArgsSchema, location="query")
@blp.response(200, PromotionPageSchema)
def list_promotions(args: dict[str, Any]) -> dict[str, Any]:
    """Promotion history, newest first, cursor-paginated."""
    history.check_listing(svc(), args.get("repository"), args.get("environment"))
    items, cursor = svc().promotions.history(args.get("repository"), args.get("environment"),
                                             args["limit"], args.get("cursor"), listing_scope())
    return {"items": items, "next_cursor": cursor}


@blp.route("/promotions/<string:promotion_id>", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.response(200, PromotionSchema)
def get_promotion(promotion_id: str) -> dict[str, Any]:
    """One promotion record."""
    record = svc().promotions.record(promotion_id)
    if record is None:
        raise NotFound(f"promotion {promotion_id!r} not found")
    check_visible(record.get("repository"), f"promotion {promotion_id!r}")
    return record


@blp.route("/rollbacks", methods=["POST"])
@endpoint(role="ci", scope="repository+environment", audit="rollback.create", metric="rollback",
          idempotent=True, errors=(400, 404, 409, 502), waits_for_replicas=True)
@blp.arguments(RollbackRequestSchema)
@blp.response(201, PromotionSchema, headers=REPLAY_HEADERS)
def create_rollback(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Roll an environment back to the previous digest or to a named earlier promotion."""
    status, record, replayed = history.rollback(svc(), body, g.get("actor_name"),
                                                idempotency_key())
    return record, status, replay_headers(replayed)


@blp.route("/environments", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(EnvironmentsQueryArgsSchema, location="query")
@blp.response(200, EnvironmentsSchema)
def get_environments(args: dict[str, Any]) -> dict[str, Any]:
    """What each environment points to now, or pointed to at time `at`."""
    return history.environments(svc(), args["repository"], args.get("at"))
