"""Cursor pagination over Redis streams: newest first, each page costs O(limit)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

import redis

from service.domain.errors import InvalidRequest

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


def encode_cursor(stream_id: str) -> str:
    """Opaque cursor for a stream id."""
    return base64.urlsafe_b64encode(stream_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The stream id inside a cursor; InvalidRequest when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.urlsafe_b64decode(padded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        value = ""
    if not STREAM_ID.match(value):
        raise InvalidRequest("invalid cursor", errors={"cursor": ["not a cursor from this API"]})
    return value


def page(
    client: redis.Redis,
    stream: str,
    limit: int,
    cursor: str | None,
    keep: Callable[[dict[str, Any]], bool] | None = None,
    scan_cap: int = 5000,
) -> tuple[list[dict[str, Any]], str | None]:
    """Items (the JSON in field `d`) newest first after `cursor`, and the next cursor."""
    upper = f"({decode_cursor(cursor)}" if cursor else "+"
    items: list[dict[str, Any]] = []
    last_id: str | None = None
    scanned = 0
    while len(items) < limit and scanned < scan_cap:
        batch = client.xrevrange(stream, max=upper, min="-", count=max(limit * 2, 50))
        if not batch:
            return items, None
        for entry_id, fields in batch:
            scanned += 1
            last_id = entry_id
            item = json.loads(fields["d"])
            if keep is None or keep(item):
                items.append(item)
                if len(items) == limit:
                    break
        upper = f"({last_id}"
    more = bool(client.xrevrange(stream, max=f"({last_id}", min="-", count=1)) if last_id else False
    return items, (encode_cursor(last_id) if more and last_id else None)
