"""What the gateway knows of tag → digest in each repository."""

from __future__ import annotations

import redis

from service.store import key


class TagMap:
    """Tag → digest per repository (a cache of the registry, kept by pushes and webhooks)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def get(self, repository: str, tag: str) -> str | None:
        """The recorded digest of a tag, or None when unknown."""
        return self.r.hget(key("tags", repository), tag)

    def set(self, repository: str, tag: str, digest: str) -> None:
        """Record that a tag points to a digest."""
        self.r.hset(key("tags", repository), tag, digest)

    def forget(self, repository: str, tag: str) -> None:
        """Drop a tag (deleted in the registry)."""
        self.r.hdel(key("tags", repository), tag)

    def all(self, repository: str) -> dict[str, str]:
        """Every recorded tag of a repository."""
        return self.r.hgetall(key("tags", repository))

    def lock(self, repository: str, tag: str, timeout: float = 60.0) -> redis.lock.Lock:
        """A lock serialising pushes of one tag (check, write and record as one step)."""
        return self.r.lock(key("lock", "tag", repository, tag), timeout=timeout,
                           blocking_timeout=timeout)
