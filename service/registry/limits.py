"""What reading and parsing a manifest may cost (issue 14, "memory amplification").

A 4 MiB manifest of `{}` objects is ~1.4 million dicts: ~93 MiB once parsed. Two bounds
keep that out of every process that parses manifests:

- `check_structure` counts JSON objects, arrays and elements on the raw bytes, before
  `json.loads` builds anything, and refuses absurd counts (a real manifest has at most a few
  thousand descriptors, a handful of objects each);
- `MemoryBudget` bounds the bytes of manifests one process reads and parses at once: each
  request reserves what its manifest may cost and waits a bounded time for room.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

# Far above any real manifest (an index of 2,000 platforms with annotations is ~8,000
# objects); at these counts the parsed document stays below ~30 MiB, whatever the shape.
MAX_CONTAINERS = 16_384  # JSON objects + arrays
MAX_ELEMENTS = 131_072  # commas: every value but the first of each container follows one
# Strings looked at one by one when braces or commas inside strings push the counts over
# the limits (an annotation holding JSON text); more strings than this and the upper bound
# stands, so refusing 4 MiB of tiny strings costs milliseconds.
MAX_STRINGS_SCANNED = 20_000
# Bytes of memory reading and parsing a manifest of n bytes may take: the body, gunicorn's
# read buffers, the decoded text and the parsed objects allowed by the limits above.
COST_FACTOR = 8
MIN_COST = 64 * 1024
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


class ManifestTooComplex(ValueError):
    """The manifest has more JSON objects, arrays or elements than any real one."""


def _counts(data: bytes) -> tuple[int, int]:
    return data.count(b"{") + data.count(b"["), data.count(b",")


def _counts_outside_strings(body: bytes) -> tuple[int, int] | None:
    """Exact counts for UTF-8 JSON with few strings: their contents taken out one at a time
    (flat memory: re.sub would build a list of every piece, ~90 MiB for 4 MiB of tiny
    strings); None when there are more than MAX_STRINGS_SCANNED strings."""
    delimiters = body.count(b'"') - body.count(b'\\"')  # escaped quotes delimit nothing
    if delimiters > 2 * MAX_STRINGS_SCANNED:
        return None
    containers, elements = _counts(body)
    for number, match in enumerate(_STRING.finditer(body)):
        if number >= MAX_STRINGS_SCANNED:
            return None
        start, end = match.span()
        if end - start > 2:
            containers -= body.count(b"{", start, end) + body.count(b"[", start, end)
            elements -= body.count(b",", start, end)
    return containers, elements


def check_structure(body: bytes) -> None:
    """Refuse a manifest whose JSON structure is absurd, without parsing it."""
    counts = _counts(body)  # string contents counted too: an upper bound
    if counts[0] <= MAX_CONTAINERS and counts[1] <= MAX_ELEMENTS:
        return
    if b"\x00" not in body:  # UTF-8 (the registry parses nothing else): count exactly
        counts = _counts_outside_strings(body) or counts
    containers, elements = counts
    if containers > MAX_CONTAINERS:
        raise ManifestTooComplex(f"manifest has {containers} JSON objects and arrays; the "
                                 f"limit is {MAX_CONTAINERS}")
    if elements > MAX_ELEMENTS:
        raise ManifestTooComplex(f"manifest has more than {MAX_ELEMENTS} JSON elements "
                                 f"({elements} commas); the limit is {MAX_ELEMENTS}")


def parse_manifest(body: bytes) -> Any:
    """json.loads, after check_structure: the one way manifests are parsed."""
    check_structure(body)
    return json.loads(body)


def parse_cost(length: int) -> int:
    """Bytes to reserve for reading and parsing a manifest of `length` bytes."""
    return max(MIN_COST, length * COST_FACTOR)


class MemoryBudget:
    """A weighted semaphore over bytes, one per process.

    Callers reserve what their work may cost and wait at most `timeout` seconds for room; a
    reservation above the capacity is trimmed to it (such a job runs alone)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, cost: int, timeout: float) -> int | None:
        """Reserve `cost` bytes; the amount reserved, or None when no room came in time."""
        cost = min(cost, self.capacity)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.used + cost > self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self.used += cost
        return cost

    def release(self, reserved: int) -> None:
        """Give back what acquire returned."""
        with self._cond:
            self.used -= reserved
            self._cond.notify_all()
