"""A bounded, content-addressed cache of manifests, per gateway process.

A manifest's digest is the sha256 of its bytes, so an entry never goes stale: what may
change is only whether a repository links it (or which digest a tag names), and that is
checked on every request against the registry's storage (service.http.v2.local_pulls), never
remembered here. The cache holds the bytes and the headers the registry answered with, so a
hit answers exactly what the registry would. Bounded by bytes (TAGWARDEN_MANIFEST_CACHE_MIB),
least recently used out first; an entry larger than an eighth of the bound is not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

ENTRY_OVERHEAD = 512  # the entry's objects and headers, roughly, besides the body


@dataclass(frozen=True)
class CachedManifest:
    """A manifest as the registry served it: exact bytes, media type and response headers."""

    body: bytes
    media_type: str
    headers: tuple[tuple[str, str], ...]

    @property
    def cost(self) -> int:
        """Bytes this entry is counted for."""
        return len(self.body) + ENTRY_OVERHEAD + sum(len(k) + len(v) for k, v in self.headers)


class ManifestCache:
    """digest → CachedManifest, LRU by bytes, safe across the threads of a process."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, CachedManifest] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> CachedManifest | None:
        """The cached manifest of a digest (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(digest)
            self.hits += 1
            return entry

    def put(self, digest: str, entry: CachedManifest) -> bool:
        """Keep an entry (the caller verified that `digest` is the sha256 of its body);
        False when it is too large to keep."""
        cost = entry.cost
        if self.max_bytes <= 0 or cost > self.max_bytes // 8:
            return False
        with self._lock:
            old = self._entries.pop(digest, None)
            if old is not None:
                self.size -= old.cost
            self._entries[digest] = entry
            self.size += cost
            while self.size > self.max_bytes and self._entries:
                _, evicted = self._entries.popitem(last=False)
                self.size -= evicted.cost
        return True

    def discard(self, digest: str) -> None:
        """Drop a digest (deleted through the gateway: its memory is better used elsewhere)."""
        with self._lock:
            old = self._entries.pop(digest, None)
            if old is not None:
                self.size -= old.cost

    def __len__(self) -> int:
        return len(self._entries)
