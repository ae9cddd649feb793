"""What every document schema shares (API bodies, the policy document, backup lines):
strict input, UTC-representable times, marshmallow's nested messages flattened."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate

DIGEST = validate.Regexp(r"^sha256:[0-9a-f]{64}$", error="must be sha256:<64 hex>")


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
