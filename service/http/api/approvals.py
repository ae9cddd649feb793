"""Approvals (four eyes on promotions) and verification evidence (check results)."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint

from service.core import approvals, verifications
from service.http.api import caller, listing_scope, svc
from service.http.api.meta import endpoint
from service.http.schemas.approvals import (
    ApprovalPageSchema,
    ApprovalQueryArgsSchema,
    ApprovalRequestSchema,
    ApprovalSchema,
    VerificationPageSchema,
    VerificationQueryArgsSchema,
    VerificationRequestSchema,
    VerificationSchema,
)

blp = Blueprint("approvals", __name__, url_prefix="/api/v1",
                description="Approvals and verification evidence")


@blp.route("/approvals", methods=["POST"])
# who may approve is the policy's approvals gate, decided in service/core/approvals.py
@endpoint(role="reader", scope="repository", audit="approval.grant", errors=(400, 404, 502))
@blp.arguments(ApprovalRequestSchema)
@blp.response(201, ApprovalSchema)
def create_approval(body: dict[str, Any]) -> dict[str, Any]:
    """Approve a digest for an environment. Who may is decided by the policy's approvals
    gate (`role:`, `token:`, `glob:` entries), not by the token's role; the token's
    repository globs must cover the repository."""
    return approvals.grant(svc(), body, caller())


@blp.route("/approvals", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(ApprovalQueryArgsSchema, location="query")
@blp.response(200, ApprovalPageSchema)
def list_approvals(args: dict[str, Any]) -> dict[str, Any]:
    """Approvals, newest first, by repository, environment and/or digest."""
    return approvals.listing(svc(), args, listing_scope())


@blp.route("/approvals/<string:approval_id>", methods=["DELETE"])
# the approver's or an admin's, decided in service/core/approvals.py
@endpoint(role="reader", scope="", audit="approval.withdraw")
@blp.response(200, ApprovalSchema)
def withdraw_approval(approval_id: str) -> dict[str, Any]:
    """Withdraw an approval (its approver or an admin); it no longer counts."""
    return approvals.withdraw(svc(), approval_id, caller())


@blp.route("/verifications", methods=["POST"])
@endpoint(role="ci", scope="repository+environment", audit="verification.record",
          errors=(400, 404, 502))
@blp.arguments(VerificationRequestSchema)
@blp.response(201, VerificationSchema)
def create_verification(body: dict[str, Any]) -> dict[str, Any]:
    """Record a check's result (`passed` or `failed`) for a digest in an environment (ci,
    within the token's repositories and environments)."""
    return verifications.record(svc(), body, g.get("actor_name"))


@blp.route("/verifications", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(VerificationQueryArgsSchema, location="query")
@blp.response(200, VerificationPageSchema)
def list_verifications(args: dict[str, Any]) -> dict[str, Any]:
    """Recorded check results, newest first, by repository, digest and/or environment."""
    return verifications.listing(svc(), args, listing_scope())
