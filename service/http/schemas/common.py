"""Schemas shared by every API: list envelopes, pagination, errors, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class StrictSchema(Schema):
    """Input schemas reject unknown fields."""

    class Meta:
        unknown = RAISE


def utc_representable(moment: datetime) -> None:
    """Refuse a time whose UTC form falls outside years 1-9999 (`0001-01-01T00:00:00+14:00`):
    it would fail every later conversion to UTC."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValidationError("date-time out of range once converted to UTC") from None


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


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as `{"promotion.production.scan.max_severity": [...]}`."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == "_schema" and prefix:
                path = prefix
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for field, texts in flatten_errors(value, path).items():
                out.setdefault(field, []).extend(texts)
    elif isinstance(messages, list | tuple):
        for item in messages:
            for field, texts in flatten_errors(item, prefix).items():
                out.setdefault(field, []).extend(texts)
    else:
        out.setdefault(prefix or "_schema", []).append(str(messages))
    return out
