"""API tokens (created, listed, revoked) and the audit trail."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import g
from flask_smorest import Blueprint

from service.domain.durations import format_time
from service.domain.errors import InvalidRequest, NotFound
from service.http.api import listing_scope, svc
from service.http.api.meta import endpoint
from service.http.schemas.tokens import (
    AuditPageSchema,
    AuditQueryArgsSchema,
    TokenCreateSchema,
    TokenPageSchema,
    TokenSchema,
)

blp = Blueprint("tokens", __name__, url_prefix="/api/v1", description="Tokens and audit")
TOKEN_PREFIX = "tw_"



def _public(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k != "hash"}


@blp.route("/tokens", methods=["POST"])
@endpoint(role="admin", scope="", audit="token.create", errors=(400,))
@blp.arguments(TokenCreateSchema)
@blp.response(201, TokenSchema)
def create_token(body: dict[str, Any]) -> dict[str, Any]:
    """Create a token; the secret is in this answer only (it is stored hashed)."""
    expires = body.get("expires_at")
    if expires is not None and expires <= datetime.now(UTC):
        raise InvalidRequest("expires_at is in the past",
                             errors={"expires_at": ["must be in the future"]})
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    meta = {
        "id": "tok_" + uuid.uuid4().hex[:16], "name": body["name"], "role": body["role"],
        "repositories": body.get("repositories") or ["*"],
        "environments": body.get("environments"),
        "expires_at": format_time(expires) if expires else None,
        "created_at": format_time(datetime.now(UTC)), "created_by": g.get("actor_name"),
        "prefix": secret[:8],
    }
    svc().tokens.create(meta, secret)
    return {**meta, "token": secret}


@blp.route("/tokens", methods=["GET"])
@endpoint(role="admin", scope="")
@blp.response(200, TokenPageSchema)
def list_tokens() -> dict[str, Any]:
    """Every token's metadata (never the secret)."""
    return {"items": [_public(t) for t in svc().tokens.all()], "next_cursor": None}


@blp.route("/tokens/<string:token_id>", methods=["DELETE"])
@endpoint(role="admin", scope="", audit="token.delete")
@blp.response(204)
def delete_token(token_id: str) -> None:
    """Revoke a token, effective immediately."""
    if not svc().tokens.delete(token_id):
        raise NotFound(f"token {token_id!r} not found")


@blp.route("/audit", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(AuditQueryArgsSchema, location="query")
@blp.response(200, AuditPageSchema)
def list_audit(args: dict[str, Any]) -> dict[str, Any]:
    """Every mutating call: actor, action, target, outcome, time; newest first."""
    filters = {k: args[k] for k in ("actor", "action", "repository", "outcome") if args.get(k)}
    items, cursor = svc().audit.list(filters, args["limit"], args.get("cursor"), listing_scope())
    return {"items": items, "next_cursor": cursor}
