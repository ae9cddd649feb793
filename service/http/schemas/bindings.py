"""Immutable tag bindings."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from service.domain.tags import valid_repository, valid_tag
from service.http.schemas.common import StrictSchema, page_of


def REPOSITORY(value: str) -> None:  # noqa: N802 - used like marshmallow's validators
    """A registry repository name."""
    if not valid_repository(value):
        raise ValidationError("not a registry repository name")


def TAG(value: str) -> None:  # noqa: N802
    """A registry tag."""
    if not valid_tag(value):
        raise ValidationError("not a registry tag")


class BindingQueryArgsSchema(StrictSchema):
    """`?repository=` of a bindings listing."""

    repository = fields.String(required=True, validate=REPOSITORY)


class BindingReleaseQueryArgsSchema(BindingQueryArgsSchema):
    """`?repository=&tag=` of the binding to release."""

    tag = fields.String(required=True, validate=TAG)


class BindingReleaseSchema(StrictSchema):
    """Why a binding is released (recorded in the audit trail)."""

    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class BindingSchema(Schema):
    """An immutable tag bound to a digest for good."""

    repository = fields.String(required=True)
    tag = fields.String(required=True)
    digest = fields.String(required=True)
    bound_at = fields.String(required=True)
    bound_by = fields.String(allow_none=True)


BindingPageSchema = page_of(BindingSchema, "BindingPage")
