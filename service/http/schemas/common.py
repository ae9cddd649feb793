"""Schemas shared by every API: list envelopes, pagination, errors, decisions."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.domain.schemas.base import (  # noqa: F401 - shared with the API schemas
    StrictSchema,
    flatten_errors,
    utc_representable,
)


class PageQueryArgsSchema(StrictSchema):
    """`?limit=&cursor=` on every list."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


class ViolationSchema(Schema):
    """One broken rule."""

    rule = fields.String(required=True)
    message = fields.String(required=True)
    policy = fields.String(required=True)


class DecisionSchema(Schema):
    """Every decision: allowed, deciding policy, violations."""

    allowed = fields.Boolean(required=True)
    policy = fields.String(required=True)
    violations = fields.List(fields.Nested(ViolationSchema), required=True)


class ErrorSchema(Schema):
    """The error envelope of every 4xx/5xx on /api/v1."""

    code = fields.String(required=True)
    message = fields.String(required=True)
    errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    violations = fields.List(fields.Nested(ViolationSchema))


def page_of(item_schema: type[Schema], name: str) -> type[Schema]:
    """A `{"items": [...], "next_cursor": ...}` schema for `item_schema`."""
    return Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema), required=True),
            "next_cursor": fields.String(allow_none=True, required=True),
        },
        name=name,
    )


