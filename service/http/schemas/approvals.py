"""Approvals and verification evidence."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

from service.domain.approvals import RESULTS
from service.http.schemas.bindings import REPOSITORY
from service.http.schemas.common import PageQueryArgsSchema, StrictSchema, page_of
from service.http.schemas.promotions import DIGEST, ENVIRONMENT

CHECK_NAME = validate.Regexp(r"^[a-z0-9][a-z0-9._-]{0,62}$",
                             error="1-63 of a-z 0-9 . _ - starting with a letter or digit")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def HTTP_URL(value: str) -> None:  # noqa: N802 - used like marshmallow's validators
    """An absolute http(s) URL (a CI job's page)."""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or _CONTROL.search(value):
        raise ValidationError("must be an absolute http or https URL")


class ApprovalRequestSchema(StrictSchema):
    """Approve a digest for an environment (the caller is the approver)."""

    repository = fields.String(required=True, validate=REPOSITORY)
    environment = fields.String(required=True, validate=ENVIRONMENT)
    digest = fields.String(required=True, validate=DIGEST)
    comment = fields.String(validate=validate.Length(max=1000), allow_none=True)
    hotfix = fields.Boolean(load_default=False, metadata={
        "description": "a hotfix approval: counted by the environment's `hotfix.approvals` "
                       "(and given by its approvers), never by the ordinary approvals gate"})


class ApprovalQueryArgsSchema(PageQueryArgsSchema):
    """Filters of the approvals list."""

    repository = fields.String(validate=REPOSITORY)
    environment = fields.String(validate=ENVIRONMENT)
    digest = fields.String(validate=DIGEST)


class ApprovalSchema(Schema):
    """One approval: who approved which digest for which environment, until when."""

    id = fields.String(required=True)
    repository = fields.String(required=True)
    environment = fields.String(required=True)
    digest = fields.String(required=True)
    approver = fields.String(required=True, metadata={"description": "the token's name"})
    approver_role = fields.String()
    comment = fields.String(allow_none=True)
    policy = fields.String(metadata={"description": "the policy whose gate allowed it"})
    created_at = fields.String(required=True)
    expires_at = fields.String(required=True)
    withdrawn_at = fields.String(allow_none=True)
    withdrawn_by = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(["valid", "expired", "withdrawn"]))
    hotfix = fields.Boolean(metadata={"description": "true for a hotfix approval"})


class VerificationRequestSchema(StrictSchema):
    """One result of a named check run against a digest in an environment."""

    repository = fields.String(required=True, validate=REPOSITORY)
    digest = fields.String(required=True, validate=DIGEST)
    environment = fields.String(required=True, validate=ENVIRONMENT)
    name = fields.String(required=True, validate=CHECK_NAME)
    result = fields.String(required=True, validate=validate.OneOf(RESULTS))
    url = fields.String(validate=[validate.Length(max=2000), HTTP_URL], allow_none=True)
    details = fields.String(validate=validate.Length(max=4000), allow_none=True)


class VerificationQueryArgsSchema(PageQueryArgsSchema):
    """Filters of the verifications list."""

    repository = fields.String(validate=REPOSITORY)
    digest = fields.String(validate=DIGEST)
    environment = fields.String(validate=ENVIRONMENT)


class VerificationSchema(Schema):
    """A recorded check result."""

    id = fields.String(required=True)
    repository = fields.String(required=True)
    digest = fields.String(required=True)
    environment = fields.String(required=True)
    name = fields.String(required=True)
    result = fields.String(required=True, validate=validate.OneOf(RESULTS))
    url = fields.String(allow_none=True)
    details = fields.String(allow_none=True)
    recorded_by = fields.String(allow_none=True)
    created_at = fields.String(required=True)


ApprovalPageSchema = page_of(ApprovalSchema, "ApprovalPage")
VerificationPageSchema = page_of(VerificationSchema, "VerificationPage")
