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
    # each half of a stream id is an unsigned 64-bit number; Redis refuses anything larger
    if not STREAM_ID.fullmatch(value) or any(int(p) >= 2**64 for p in value.split("-")):
        raise InvalidRequest("invalid cursor", errors={"cursor": ["not a cursor from this API"]})
    return value


Visible = Callable[[str | None], bool]  # a caller's listing scope, by repository
Keep = Callable[[dict[str, Any]], bool]
Load = Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]]


def page(
    client: redis.Redis,
    stream: str,
    limit: int,
    cursor: str | None,
    keep: Keep | None = None,
    scan_cap: int = 5000,
    load: Load | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Items (the JSON in field `d`) newest first after `cursor`, and the next cursor.

    `load` turns a batch of stream entries into the records they refer to (None for one that
    is gone); `keep` filters the records. Filtering happens while paging, so a page is only
    short with a next cursor when `scan_cap` entries were read without filling it: the
    cursor then points past what was read and nothing is skipped."""
    upper = f"({decode_cursor(cursor)}" if cursor else "+"
    items: list[dict[str, Any]] = []
    last_id: str | None = None
    scanned = 0
    batch_size = limit if keep is None else max(limit * 2, 50)
    while len(items) < limit and scanned < scan_cap:
        batch = client.xrevrange(stream, max=upper, min="-", count=batch_size)
        if not batch:
            return items, None
        entries = [json.loads(fields["d"]) for _, fields in batch]
        records = load(entries) if load is not None else list(entries)
        for (entry_id, _), item in zip(batch, records, strict=True):
            scanned += 1
            last_id = entry_id
            if item is not None and (keep is None or keep(item)):
                items.append(item)
                if len(items) == limit:
                    break
        upper = f"({last_id}"
    more = bool(client.xrevrange(stream, max=f"({last_id}", min="-", count=1)) if last_id else False
    return items, (encode_cursor(last_id) if more and last_id else None)


def both(first: Keep | None, second: Keep | None) -> Keep | None:
    """A filter keeping what both keep (None: no filter)."""
    if first is None or second is None:
        return first or second
    return lambda item: first(item) and second(item)
