"""Scan requests, reports and the vulnerability database summary."""

from __future__ import annotations

from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from service.http.schemas.common import PageQueryArgsSchema, StrictSchema, page_of


class ScanRequestSchema(StrictSchema):
    """Scan the manifest a tag or digest names."""

    repository = fields.String(required=True, validate=validate.Length(min=1, max=255))
    reference = fields.String(required=True, validate=validate.Length(min=1, max=128))


class ScanQueryArgsSchema(PageQueryArgsSchema):
    """Filters of the scan list."""

    repository = fields.String(validate=validate.Length(min=1, max=255))
    digest = fields.String(validate=validate.Regexp(r"^sha256:[0-9a-f]{64}$"))


class FindingSchema(Schema):
    """One advisory affecting one installed package."""

    id = fields.String()
    aliases = fields.List(fields.String())
    package = fields.String()
    ecosystem = fields.String()
    installed_version = fields.String()
    fixed_version = fields.String(allow_none=True)
    severity = fields.String()
    layer = fields.String(allow_none=True)
    purl = fields.String(allow_none=True)
    platform = fields.String(allow_none=True)
    scanner = fields.String(allow_none=True)


class SummarySchema(Schema):
    """Findings counted by severity."""

    critical = fields.Integer()
    high = fields.Integer()
    medium = fields.Integer()
    low = fields.Integer()
    unknown = fields.Integer()


class ScanSchema(Schema):
    """A scan and, once it succeeded, its report."""

    id = fields.String()
    repository = fields.String()
    digest = fields.String()
    status = fields.String(validate=validate.OneOf(["queued", "running", "succeeded", "failed"]))
    error = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    requested_by = fields.String(allow_none=True)
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    duration_seconds = fields.Float(allow_none=True)
    summary = fields.Nested(SummarySchema, allow_none=True)
    packages = fields.Integer(allow_none=True)
    findings = fields.List(fields.Nested(FindingSchema))
    vulndb = fields.Dict(allow_none=True)
    platforms = fields.List(fields.Dict())


class VulnDBSchema(Schema):
    """What the vulnerability database holds."""

    records = fields.Integer()
    ecosystems = fields.Dict(keys=fields.String(), values=fields.Integer())
    loaded_at = fields.String(allow_none=True)
    version = fields.Integer(allow_none=True)


class VulnDBImportFormSchema(StrictSchema):
    """An OSV export to load: an uploaded `file`, or a `path` on the gateway's host."""

    file = Upload(metadata={"description": "an OSV zip (a zip of OSV .json advisories, such as "
                                           "osv.dev's all.zip); at most "
                                           "TAGWARDEN_VULNDB_UPLOAD_MAX_BYTES"})
    path = fields.String(validate=validate.Length(min=1, max=4096), metadata={
        "description": "instead of `file`: an absolute path on the gateway's host (a directory "
                       "of OSV .json files and/or all.zip archives)"})
    rescan = fields.Boolean(load_default=True, metadata={
        "description": "queue rescans of every digest an environment points to"})


class VulnDBImportSchema(Schema):
    """What an import loaded."""

    version = fields.Integer()
    loaded_at = fields.String()
    records = fields.Integer()
    skipped = fields.Integer()
    withdrawn = fields.Integer()
    ecosystems = fields.Dict(keys=fields.String(), values=fields.Integer())
    errors = fields.List(fields.String())
    rescans = fields.Integer(allow_none=True)


ScanPageSchema = page_of(ScanSchema, "ScanPage")
