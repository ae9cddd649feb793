"""Blob uploads: the session's offset and latest `_state` tracked (service.core.uploads), a
chunk out of order refused before the registry sees it."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response, g, request

from service.core import uploads
from service.http.v2.forwarding import (
    current_services,
    public_origin,
    registry_error,
    relay,
    send,
)
from service.registry.routes import V2Route


def upload(route: V2Route) -> Response:
    """A blob upload request: the session's offset and latest `_state` tracked, a chunk out
    of order refused with 416 before the registry sees it (service.core.uploads)."""
    svc, method, name = current_services(), request.method, route.name
    uuid = route.ref if route.kind == "upload_session" else None
    session = uploads.session_of(svc, name, uuid) if uuid else None
    if method == "PATCH" and uuid:
        checked = uploads.check_chunk(svc, name, uuid, request.headers.get("Content-Range"),
                                      request.content_length)
        if isinstance(checked, uploads.Refusal):
            return upload_refusal(name, uuid, checked)
    # the latest state: a status request or an in-order chunk never replays a stale one
    state = session["state"] if session and method in ("GET", "HEAD", "PATCH") else None
    mount_from = None
    if route.kind == "upload" and request.args.get("mount") and not request.args.get("from"):
        mount_from = uploads.mount_source(svc, name, request.args["mount"],
                                          g.get("principal"))
    upstream, origin, body = send(route, state, mount_from)
    uploads.record_answer(svc, name, method, upstream.status, upstream.headers,
                          session["offset"] if session else 0, body.count if body else 0, uuid)
    return relay(upstream, origin, head=method == "HEAD")


def upload_refusal(name: str, uuid: str, refusal: uploads.Refusal) -> Response:
    """The gateway's own answer to a refused chunk: the error, and where the session stands."""
    resp = registry_error(refusal.status, refusal.code, refusal.message,
                          {"upload": uuid})
    if refusal.session:
        state = urlencode({"_state": refusal.session["state"]})
        resp.headers["Location"] = f"{public_origin()}/v2/{name}/blobs/uploads/{uuid}?{state}"
        resp.headers["Range"] = uploads.range_of(refusal.session["offset"])
        resp.headers["Docker-Upload-UUID"] = uuid
    return resp
