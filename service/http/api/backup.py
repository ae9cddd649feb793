"""Disaster recovery: a consistent backup streamed out, a validated restore streamed in."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request, stream_with_context
from flask_smorest import Blueprint

from service.core import backup
from service.domain.schemas.backup import RestoreQueryArgsSchema, RestoreResultSchema
from service.http.api import svc
from service.http.api.meta import endpoint
from service.http.gunicorn_worker import lift_deadline

blp = Blueprint("backup", __name__, url_prefix="/api/v1",
                description="Backups and restores of the governance state")
NDJSON = "application/x-ndjson"
STREAM_DOC = {"description": "NDJSON, one `{\"kind\", ...}` object a line: `header` (version, "
                             "created_at), policies, tokens (hashes only), subscriptions, "
                             "promotions (history), pointers, bindings, approvals, "
                             "verifications, referrers, then a `footer` with the counts",
              "schema": {"type": "string"}}


@blp.route("/backup", methods=["GET"])
@endpoint(role="admin", scope="")
@blp.response(200, content_type=NDJSON, description=STREAM_DOC["description"])
def get_backup() -> Response:
    """Stream a consistent snapshot of the governance state (admin; audited)."""
    lines = backup.stream_backup(svc())  # the cut is taken here, before the first byte
    svc().audit.record("backup.download", (g.get("actor_id"), g.get("actor_name")), {},
                       "success", 200, request.environ.get("tagwarden.request_id"))
    return Response(stream_with_context(lines), mimetype=NDJSON,
                    headers={"Content-Disposition": 'attachment; filename="tagwarden.ndjson"',
                             "Cache-Control": "no-store"})


@blp.route("/restore", methods=["POST"])
# a streamed body, read (and bounded by TAGWARDEN_RESTORE_MAX_BYTES) by the restore itself
@endpoint(role="admin", scope="", audit="backup.restore", body="stream")
@blp.arguments(RestoreQueryArgsSchema, location="query")
# documented as octet-stream (what client generators can send); any content type is read
@blp.doc(requestBody={"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}},
    "description": "a backup stream (NDJSON) as GET /backup writes it"})
@blp.response(201, RestoreResultSchema)
def restore(args: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Load a backup (admin): every line validated before anything is written; 409 over a
    store that holds governance state unless `mode=replace`."""
    # a large backup takes longer than the request deadline: the upload's idle timeout and
    # minimum rate hold instead (and it takes one of the process's upload slots)
    lift_deadline(request.environ)
    return backup.restore(svc(), request.stream, args["mode"], g.get("actor_name")), 201
