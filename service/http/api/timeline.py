"""The post-mortem timeline."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from service.core import timeline
from service.http.api import check_visible, svc
from service.http.api.meta import endpoint
from service.http.schemas.timeline import TimelinePageSchema, TimelineQueryArgsSchema

blp = Blueprint("timeline", __name__, url_prefix="/api/v1",
                description="What happened to a repository, in one order")


@blp.route("/timeline", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(TimelineQueryArgsSchema, location="query")
@blp.response(200, TimelinePageSchema)
def get_timeline(args: dict[str, Any]) -> dict[str, Any]:
    """Pushes, denials, promotions, rollbacks, hotfixes, drift, scans, approvals and
    verifications of a repository, oldest first, paginated."""
    check_visible(args["repository"], f"repository {args['repository']!r}")
    return timeline.timeline(svc(), args)
