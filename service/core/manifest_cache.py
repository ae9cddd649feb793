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
from collections.abc import Iterable
from dataclasses import dataclass

from service.registry.client import (
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    RESPONSE_DROP,
    Manifest,
    RegistryClient,
    sha256_digest,
)
from service.registry.storage import SHA256_RE, RegistryStorage

ENTRY_OVERHEAD = 512  # the entry's objects and headers, roughly, besides the body
# registry response headers a cached answer does not replay: those not relayed to clients,
# and the answer's own request id and Location (none on a 200)
NOT_REPLAYED = RESPONSE_DROP | {"x-request-id", "location"}


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


def served_entry(digest: str, status: int, headers: Iterable[tuple[str, str]],
                 body: bytes) -> CachedManifest | None:
    """The entry for the registry's answer to a GET of manifest `digest` (the gateway's own
    reads and its clients' alike: both ask for the stored type), or None unless it is one to
    keep: 200, a manifest type, at most 4 MiB, and both the registry's Docker-Content-Digest
    and the sha256 of the bytes are `digest`."""
    kept = tuple((k, v) for k, v in headers if k.lower() not in NOT_REPLAYED)
    named = {k.lower(): v for k, v in kept}
    media_type = named.get("content-type", "")
    if (status != 200 or media_type not in MANIFEST_TYPES or len(body) > MAX_MANIFEST_BYTES
            or named.get("docker-content-digest") != digest
            or sha256_digest(body) != digest):
        return None
    return CachedManifest(body, media_type, kept)


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


def read(storage: RegistryStorage | None, cache: ManifestCache, registry: RegistryClient,
         repository: str, reference: str) -> Manifest | None:
    """A manifest by tag or digest, for the gateway's own use (a promotion's source): from
    the cache when the registry's storage says the repository links it now — the link files
    the registry itself reads, as a pull answered from the cache checks them — else from the
    registry (`registry.get_manifest`), its answer kept for the next read and for pulls.
    None when the registry has no such manifest in the repository."""
    if storage is not None:
        if SHA256_RE.match(reference):
            digest = reference if storage.manifest_linked(repository, reference) else None
        else:
            digest = storage.tag_digest(repository, reference)
        if digest is not None and (entry := cache.get(digest)) is not None:
            return Manifest(entry.body, entry.media_type, digest)
    manifest = registry.get_manifest(repository, reference)
    if manifest is not None and storage is not None:
        kept = served_entry(manifest.digest, 200, manifest.headers, manifest.body)
        if kept is not None:
            cache.put(manifest.digest, kept)
    return manifest
