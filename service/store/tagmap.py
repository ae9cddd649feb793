"""What the gateway knows of tag → digest in each repository."""

from __future__ import annotations

import logging

import redis
from redis.lock import Lock

from service.store import key
from service.store.bindings import binding_value, bindings_key

log = logging.getLogger("tagwarden.store")
# KEYS: 1 the repository's tag map, 2 the tag's lock, 3 its bindings. ARGV: tag, digest,
# lock token, binding ("" for none). Records the tag (and binds it when asked) and releases
# the lock if still ours: 1 released, 0 it had expired.
RECORD_RELEASE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then
  redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[4])
end
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

# How long a full comparison with the registry's tag list vouches for the map. Pushes through
# the gateway and registry notifications keep the map current in between; the expiry bounds
# what notifications lost in a registry restart can leave out.
COMPLETE_TTL = 15 * 60


def map_key(repository: str) -> str:
    """The hash of tag → digest of a repository."""
    return key("tags", repository)


def complete_key(repository: str) -> str:
    """Present while the repository's map is known to hold every tag of the registry."""
    return key("tags-complete", repository)


class TagLock(Lock):
    """The lock serialising pushes of one tag; `TagMap.set(..., lock)` releases it together
    with the write, after which leaving the `with` block has nothing left to do."""

    def release(self) -> None:
        """Release, unless the tag-map write already did."""
        if self.local.token is not None:
            super().release()


class TagMap:
    """Tag → digest per repository (a cache of the registry, kept by pushes and webhooks)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._record_release = client.register_script(RECORD_RELEASE)

    def get(self, repository: str, tag: str) -> str | None:
        """The recorded digest of a tag, or None when unknown."""
        digest: str | None = self.r.hget(map_key(repository), tag)
        return digest

    def lookup(self, repository: str, tag: str) -> tuple[str | None, bool, int]:
        """(the recorded digest of a tag or None, is the map known complete?, how many tags
        it holds) in one round trip: while complete, a tag the map does not hold is not in
        the registry either."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hget(map_key(repository), tag)
        pipe.exists(complete_key(repository))
        pipe.hlen(map_key(repository))
        digest, complete, mapped = pipe.execute()
        return digest, bool(complete), int(mapped)

    def set(self, repository: str, tag: str, digest: str, lock: TagLock | None = None,
            bind: bool = False) -> None:
        """Record that a tag points to a digest (and, with `bind`, bind the immutable tag to
        it unless already bound); with the tag's held `lock`, release it in the same round
        trip."""
        token = lock.local.token if lock is not None else None
        if (lock is None or token is None) and not bind:
            self.r.hset(map_key(repository), tag, digest)
            return
        if lock is None or token is None:
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(map_key(repository), tag, digest)
            pipe.hsetnx(bindings_key(repository), tag, binding_value(digest))
            pipe.execute()
            return
        released = self._record_release(
            keys=[map_key(repository), lock.name, bindings_key(repository)],
            args=[tag, digest, token, binding_value(digest) if bind else ""])
        lock.local.token = None
        if not released:
            log.warning("the push lock of %s:%s expired before the push was recorded",
                        repository, tag)

    def forget(self, repository: str, tag: str) -> None:
        """Drop a tag (deleted in the registry)."""
        self.r.hdel(map_key(repository), tag)

    def all(self, repository: str) -> dict[str, str]:
        """Every recorded tag of a repository."""
        tags: dict[str, str] = self.r.hgetall(map_key(repository))
        return tags

    def is_complete(self, repository: str) -> bool:
        """Whether the map was compared with the registry's tag list recently."""
        return bool(self.r.exists(complete_key(repository)))

    def mark_complete(self, repository: str) -> None:
        """The map was just compared with the registry's full tag list: it can answer
        "which tags carry this digest" alone for a while."""
        self.r.set(complete_key(repository), "1", ex=COMPLETE_TTL)

    def lock(self, repository: str, tag: str, timeout: float = 60.0) -> TagLock:
        """A lock serialising pushes of one tag (check, write and record as one step)."""
        lock: TagLock = self.r.lock(key("lock", "tag", repository, tag), timeout=timeout,
                                    blocking_timeout=timeout, lock_class=TagLock)
        return lock
