"""The referrers index (OCI 1.1): per repository, subject digest → the manifests naming it.

distribution 2.8 has no referrers API; the gateway indexes every manifest with a `subject`
pushed through it, and those pushed behind its back from the registry's notifications.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key


def subjects_key(repository: str) -> str:
    """The hash of manifest digest → its subject ("" for a manifest without one)."""
    return key("referrer-subjects", repository)


def referrers_key(repository: str, subject: str) -> str:
    """The hash of referrer digest → its descriptor (JSON) for one subject."""
    return key("referrers", repository, subject)


class ReferrerIndex:
    """Referrers of each subject, per repository."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def add(self, repository: str, subject: str, descriptor: dict[str, Any]) -> None:
        """List a manifest as a referrer of `subject`."""
        digest = descriptor["digest"]
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(subjects_key(repository), digest, subject)
        pipe.hset(referrers_key(repository, subject), digest,
                  json.dumps(descriptor, separators=(",", ":"), sort_keys=True))
        pipe.execute()

    def mark_plain(self, repository: str, digest: str) -> None:
        """Remember that a manifest names no subject (it is not fetched again)."""
        self.r.hsetnx(subjects_key(repository), digest, "")

    def known(self, repository: str, digest: str) -> bool:
        """Whether a manifest was already looked at."""
        return bool(self.r.hexists(subjects_key(repository), digest))

    def referrers(self, repository: str, subject: str) -> list[dict[str, Any]]:
        """The descriptors of the manifests naming `subject`."""
        return [json.loads(raw)
                for raw in self.r.hgetall(referrers_key(repository, subject)).values()]

    def subjects(self, repository: str) -> dict[str, str]:
        """Referrer digest → the subject it names, for every indexed referrer (retention)."""
        return {d: s for d, s in self.r.hgetall(subjects_key(repository)).items() if s}

    def remove(self, repository: str, digest: str) -> str | None:
        """Forget a deleted manifest; the subject it referred to, if any."""
        subject = self.r.hget(subjects_key(repository), digest)
        if subject is None:
            return None
        pipe = self.r.pipeline(transaction=True)
        pipe.hdel(subjects_key(repository), digest)
        if subject:
            pipe.hdel(referrers_key(repository, subject), digest)
        pipe.execute()
        return subject or None
