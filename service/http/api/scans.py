"""Vulnerability scans, their SBOMs, and the vulnerability database."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_smorest import Blueprint

from service.core import scans, vulndb_admin
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.http.api import check_visible, listing_scope, svc
from service.http.api.meta import endpoint
from service.http.schemas.scans import (
    ScanPageSchema,
    ScanQueryArgsSchema,
    ScanRequestSchema,
    ScanSchema,
    VulnDBImportFormSchema,
    VulnDBImportSchema,
    VulnDBSchema,
)

blp = Blueprint("scans", __name__, url_prefix="/api/v1", description="Scans and SBOMs")



@blp.route("/scans", methods=["POST"])
@endpoint(role="ci", scope="repository", audit="scan.request", errors=(400, 404, 502))
@blp.arguments(ScanRequestSchema)
@blp.response(202, ScanSchema)
def create_scan(body: dict[str, Any]) -> dict[str, Any]:
    """Scan a tag or digest (a digest already queued or running returns that scan)."""
    digest = scans.resolve(svc(), body["repository"], body["reference"])
    scan, _ = scans.request_scan(svc(), body["repository"], digest, g.get("actor_name"))
    return scan


@blp.route("/scans", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(ScanQueryArgsSchema, location="query")
@blp.response(200, ScanPageSchema)
def list_scans(args: dict[str, Any]) -> dict[str, Any]:
    """Scans, newest first, by repository and/or digest."""
    items, cursor = svc().scans.list(args.get("repository"), args.get("digest"),
                                     args["limit"], args.get("cursor"), listing_scope())
    return {"items": items, "next_cursor": cursor}


@blp.route("/scans/<string:scan_id>", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.response(200, ScanSchema)
def get_scan(scan_id: str) -> dict[str, Any]:
    """One scan with its findings."""
    scan = svc().scans.get(scan_id)
    if scan is None:
        raise NotFound(f"scan {scan_id!r} not found")
    check_visible(scan.get("repository"), f"scan {scan_id!r}")
    return scan


@blp.route("/scans/<string:scan_id>/sbom", methods=["GET"])
@endpoint(role="reader", scope="repository", errors=(409,))
@blp.response(200, {"type": "object"}, content_type="application/vnd.cyclonedx+json")
def get_sbom(scan_id: str) -> Any:
    """The scanned image's packages as a CycloneDX JSON SBOM."""
    from flask import Response

    from service.scanner.sbom_store import sbom_of

    scan = svc().scans.get(scan_id)
    if scan is None:
        raise NotFound(f"scan {scan_id!r} not found")
    check_visible(scan.get("repository"), f"scan {scan_id!r}")
    inventory = svc().scans.inventory(scan_id)
    if scan["status"] != "succeeded" or inventory is None:
        raise Conflict(f"scan {scan_id!r} is {scan['status']}: no SBOM yet")
    return Response(sbom_of(scan, inventory), mimetype="application/vnd.cyclonedx+json")


@blp.route("/vulndb", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.response(200, VulnDBSchema)
def get_vulndb() -> dict[str, Any]:
    """What the vulnerability database holds and when it was loaded."""
    info = svc().vulndb.info()
    return {"records": info.get("records", 0), "ecosystems": info.get("ecosystems", {}),
            "loaded_at": info.get("loaded_at"), "version": info.get("version")}


@blp.route("/vulndb/imports", methods=["POST"])
@endpoint(role="admin", scope="", audit="vulndb.import", body="upload")
@blp.arguments(VulnDBImportFormSchema, location="form", content_type="multipart/form-data")
@blp.response(201, VulnDBImportSchema)
def import_vulndb(form: dict[str, Any]) -> dict[str, Any]:
    """Load an OSV export as the new vulnerability database: an uploaded zip or (admins'
    choice) a path on the gateway's host; rescans what environments run."""
    upload, path = request.files.get("file"), form.get("path")  # the schema documents `file`
    if (upload is None) == (path is None):
        raise InvalidRequest("send exactly one of `file` (an OSV zip, multipart/form-data) or "
                             "`path` (on the gateway's host)",
                             errors={"file": ["exactly one of file or path"]})
    if upload is not None:
        return vulndb_admin.import_upload(svc(), upload.stream, rescan=form["rescan"])
    return vulndb_admin.import_server_path(svc(), path, rescan=form["rescan"])
