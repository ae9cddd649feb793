"""Tokens and audit entries."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.http.schemas.common import (
    PageQueryArgsSchema,
    StrictSchema,
    page_of,
    utc_representable,
)

NAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$",
                       error="1-63 letters, digits, space . _ @ -")


class TokenCreateSchema(StrictSchema):
    """A new token: role and optional scopes."""

    name = fields.String(required=True, validate=NAME)
    role = fields.String(required=True, validate=validate.OneOf(["admin", "ci", "reader"]))
    repositories = fields.List(fields.String(validate=validate.Length(min=1, max=255)),
                               validate=validate.Length(min=1, max=100))
    environments = fields.List(fields.String(validate=validate.Length(min=1, max=63)),
                               validate=validate.Length(min=1, max=20))
    expires_at = fields.AwareDateTime(format="iso", default_timezone=None,
                                      validate=utc_representable)


class TokenSchema(Schema):
    """A token's metadata (the secret appears once, in the creation answer)."""

    id = fields.String()
    name = fields.String()
    role = fields.String()
    repositories = fields.List(fields.String())
    environments = fields.List(fields.String(), allow_none=True)
    expires_at = fields.String(allow_none=True)
    created_at = fields.String()
    created_by = fields.String(allow_none=True)
    prefix = fields.String()
    token = fields.String()


class AuditQueryArgsSchema(PageQueryArgsSchema):
    """Filters of the audit trail."""

    actor = fields.String(validate=validate.Length(max=128))
    action = fields.String(validate=validate.Length(max=64))
    repository = fields.String(validate=validate.Length(max=255))
    outcome = fields.String(validate=validate.OneOf(["success", "denied", "error"]))


class AuditEntrySchema(Schema):
    """One mutating call."""

    id = fields.String()
    time = fields.String()
    action = fields.String()
    actor = fields.Dict()
    target = fields.Dict()
    outcome = fields.String()
    status = fields.Integer()
    repository = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)


TokenPageSchema = page_of(TokenSchema, "TokenPage")
AuditPageSchema = page_of(AuditEntrySchema, "AuditPage")
