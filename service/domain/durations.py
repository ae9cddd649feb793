"""Durations (`90s`, `30m`, `1h30m`, `1d`) and RFC 3339 timestamps as the API writes them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from service.domain.errors import InvalidRequest

_DURATION_RE = re.compile(r"(?:(\d{1,6})d)?(?:(\d{1,7})h)?(?:(\d{1,9})m)?(?:(\d{1,10})s)?")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_duration(text: str) -> int:
    """Seconds in a duration like `90s`, `30m`, `2h`, `1d` or `1h30m`; InvalidRequest if bad."""
    match = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if not text or match is None:
        message = f"invalid duration {text!r}: use a number and unit (d, h, m, s), e.g. 30m, 1h30m"
        raise InvalidRequest(message, errors={"duration": [message]})
    return sum(
        int(value) * seconds
        for value, (_, seconds) in zip(match.groups(), _UNITS, strict=True)
        if value
    )


def format_duration(seconds: int) -> str:
    """The canonical text of a duration (`5400` -> `1h30m`), the inverse of parse_duration."""
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC text (`2026-12-24T00:00:00Z`) of an aware datetime."""
    micro = moment.microsecond
    spec = "seconds" if not micro else "milliseconds" if micro % 1000 == 0 else "microseconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")
