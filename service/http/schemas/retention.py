"""Retention runs: the request and the report."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from service.domain.schemas.policy import StrictBoolean, _check_glob
from service.http.schemas.common import StrictSchema

STATUSES = ("queued", "running", "succeeded", "failed")


def _check_repository_glob(value: str) -> None:
    """A repository name or glob: path components, never empty or `..`."""
    _check_glob(value)
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValidationError("a repository glob is /-separated names; no empty, . or .. parts")


class RetentionRunRequestSchema(StrictSchema):
    """Start a run over the repositories a glob matches (all governed ones when absent);
    a dry run (the default) only reports."""

    repository = fields.String(load_default=None, validate=_check_repository_glob,
                               metadata={"description": "a repository name or glob"})
    dry_run = StrictBoolean(load_default=True)


class RetentionDeletedSchema(Schema):
    """A digest the run deleted (or, in a dry run, would delete)."""

    repository = fields.String(required=True)
    digest = fields.String(required=True)
    tags = fields.List(fields.String(), required=True)
    bytes = fields.Integer(required=True, metadata={
        "description": "the manifest plus the config and layers it declares"})


class RetentionKeptSchema(Schema):
    """A digest the run kept, with every reason."""

    repository = fields.String(required=True)
    digest = fields.String(required=True)
    tags = fields.List(fields.String(), required=True)
    reasons = fields.List(fields.String(), required=True)


class RetentionRepositorySchema(Schema):
    """A repository the run evaluated, and the policy whose retention applied."""

    repository = fields.String(required=True)
    policy = fields.String(required=True)
    bytes_freed = fields.Integer(required=True)


class RetentionRunSchema(Schema):
    """A retention run and its report."""

    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    dry_run = fields.Boolean(required=True)
    repository = fields.String(allow_none=True)
    policy = fields.String(allow_none=True)
    trigger = fields.String(required=True)
    requested_by = fields.String(allow_none=True)
    created_at = fields.String(required=True)
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    repositories = fields.List(fields.Nested(RetentionRepositorySchema), required=True)
    deleted = fields.List(fields.Nested(RetentionDeletedSchema), required=True)
    kept = fields.List(fields.Nested(RetentionKeptSchema), required=True)
    bytes_freed = fields.Integer(required=True, metadata={
        "description": "bytes of the deleted manifests and of the blobs only they used in "
                       "their repository: what the registry's garbage collection can reclaim"})
    error = fields.String(allow_none=True)
