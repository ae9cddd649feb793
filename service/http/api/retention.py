"""Retention runs: started by an admin, reported to readers within their scopes."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint

from service.core import retention
from service.domain.errors import Forbidden
from service.http.api import caller, listing_scope, svc
from service.http.api.meta import endpoint
from service.http.schemas.retention import RetentionRunRequestSchema, RetentionRunSchema

blp = Blueprint("retention", __name__, url_prefix="/api/v1", description="Retention runs")


@blp.route("/retention/runs", methods=["POST"])
@endpoint(role="admin", scope="repository", audit="retention.run")
@blp.arguments(RetentionRunRequestSchema)
@blp.response(202, RetentionRunSchema)
def create_run(body: dict[str, Any]) -> dict[str, Any]:
    """Start a retention run (admin; a dry run unless `dry_run` is false) as a job."""
    glob = body["repository"] or "*"
    if not caller().sees_globs([glob]):
        raise Forbidden(f"token {caller().name!r} may not run retention over {glob!r}")
    return retention.start_run(svc(), body["repository"], body["dry_run"], g.get("actor_name"))


@blp.route("/retention/runs/<string:run_id>", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.response(200, RetentionRunSchema)
def get_run(run_id: str) -> dict[str, Any]:
    """A run's status and report: every digest deleted, every digest kept and why."""
    return retention.get_run(svc(), run_id, listing_scope())
