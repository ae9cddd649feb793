"""Immutable tag bindings: once an immutable tag has named a digest, it names it forever.

The tag map is a cache of the registry and forgets a tag the registry deletes; a binding is
governance state and outlives the manifest (a delete by digest, retention). Only an admin
releases one, through the API, and the release is audited by the caller.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import redis

from service.store import key


def bindings_key(repository: str) -> str:
    """The hash of tag → binding (JSON) of a repository."""
    return key("bindings", repository)


def binding_value(digest: str, actor: str | None = None) -> str:
    """The stored form of a new binding."""
    bound_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"digest": digest, "bound_at": bound_at, "bound_by": actor})


class TagBindings:
    """Tag → digest bindings of immutable tags, per repository."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def get(self, repository: str, tag: str) -> str | None:
        """The digest an immutable tag is bound to, or None."""
        raw = self.r.hget(bindings_key(repository), tag)
        return json.loads(raw)["digest"] if raw else None

    def bind(self, repository: str, tag: str, digest: str, actor: str | None = None) -> str:
        """Bind a tag unless it already is; the digest it is bound to afterwards."""
        if self.r.hsetnx(bindings_key(repository), tag, binding_value(digest, actor)):
            return digest
        return self.get(repository, tag) or digest

    def all(self, repository: str) -> dict[str, dict[str, Any]]:
        """Every binding of a repository: tag → {digest, bound_at, bound_by}."""
        return {tag: json.loads(raw)
                for tag, raw in self.r.hgetall(bindings_key(repository)).items()}

    def tags_of(self, repository: str, digest: str) -> list[str]:
        """The tags bound to a digest."""
        return sorted(t for t, b in self.all(repository).items() if b["digest"] == digest)

    def release(self, repository: str, tag: str) -> dict[str, Any] | None:
        """Drop a binding (admin only, audited by the caller); the released binding or None."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(bindings_key(repository), tag)
        pipe.hdel(bindings_key(repository), tag)
        raw, _ = pipe.execute()
        return json.loads(raw) if raw else None
