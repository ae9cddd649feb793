"""The /v2 blueprint: each registry request dispatched to the module of its resource
(manifests, tags, blobs, uploads, referrers, catalog), the rest forwarded as authorized."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from service.http.v2 import blobs, catalog, forwarding, manifests, referrers, tags, uploads
from service.http.v2.forwarding import current_services, registry_client
from service.registry import routes

bp = Blueprint("registry_proxy", __name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

bp.teardown_request(manifests.release_manifest_memory)


@bp.route("/v2/", methods=METHODS, defaults={"path": ""})
@bp.route("/v2/<path:path>", methods=METHODS)
def v2(path: str) -> Response:
    """The Docker Registry HTTP API v2, proxied with policy enforcement."""
    # refuses `..`, bad names and refs
    route = g.get("v2_route") or routes.parse(path, request.method)
    accel_path = current_services().settings.blob_accel_path
    if request.method == "GET" and route.kind == "tags":
        return tags.tags_list(route.name)
    if request.method in ("GET", "HEAD") and route.kind == "referrers":
        return referrers.referrers_list(route)
    if request.method in ("GET", "HEAD") and route.kind == "catalog":
        listing = g.principal.listing_filter() if g.principal else None
        return catalog.answer(registry_client(), listing)
    if (request.method == "GET" and route.kind == "blob" and accel_path
            and request.headers.get(blobs.ACCEL_HEADER) == accel_path):
        return blobs.accel_blob(route)
    if request.method in ("GET", "HEAD") and route.kind == "manifest":
        return manifests.read_manifest(route)
    if request.method == "GET" and route.kind == "blob":
        return blobs.read_blob(route)
    if request.method in ("PUT", "DELETE") and route.kind == "manifest":
        if request.method == "PUT":
            return manifests.put_manifest(route.name, route.ref)
        return manifests.delete_manifest(route)
    if request.method == "DELETE" and route.kind == "blob":
        return blobs.delete_blob(route)
    if route.kind == "upload_session" or (route.kind == "upload" and request.method == "POST"):
        return uploads.upload(route)
    return forwarding.forward(route)
