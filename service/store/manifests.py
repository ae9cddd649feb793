"""What each manifest references (children of an index, blobs of an image), per repository.

A manifest's bytes never change for its digest, so what it references is cached without
expiry: the delete guards ask it for every protected digest on every DELETE, and the
registry is asked only for a digest seen for the first time.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key


def refs_key(repository: str) -> str:
    """The hash of manifest digest → its references (JSON) of a repository."""
    return key("refs", repository)


class ManifestRefs:
    """Digest → {"index": bool, "children": [...], "blobs": [...]} per repository."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def get_many(self, repository: str, digests: list[str]) -> dict[str, dict[str, Any]]:
        """The cached references of those digests that are known."""
        if not digests:
            return {}
        raws = self.r.hmget(refs_key(repository), digests)
        return {d: json.loads(raw) for d, raw in zip(digests, raws, strict=True) if raw}

    def put(self, repository: str, digest: str, refs: dict[str, Any]) -> None:
        """Remember what a manifest references."""
        self.r.hset(refs_key(repository), digest, json.dumps(refs, separators=(",", ":")))
