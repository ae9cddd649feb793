"""Approvals: records by id, the valid ones of each (repository, environment, digest), and
listing streams.

A record is never deleted: withdrawing marks it (`withdrawn_at`, `withdrawn_by`) and takes
it out of the set the promotion gate reads; expiry is decided by the gate from `expires_at`
(the set's key outlives its newest approval, then Redis drops it).
"""

from __future__ import annotations

import builtins
import json
from datetime import datetime
from typing import Any

import redis

from service.store import key
from service.store.pagination import Visible, both, page

STREAM_MAXLEN = 1_000_000
# the valid set is kept this long after its newest approval expires (then Redis drops it)
GRACE = 3600


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _valid_key(repository: str, environment: str, digest: str, hotfix: bool = False) -> str:
    # hotfix approvals (the policy's `hotfix.approvals`) count in a set of their own: an
    # ordinary approval never opens the hotfix path, nor a hotfix approval the ordinary gate
    return key("approvals", "hotfix" if hotfix else "valid", repository, environment, digest)


class ApprovalStore:
    """Approvals in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def add(self, approval: dict[str, Any], valid_for: int) -> None:
        """Store a new approval, make it count for its digest and environment, list it."""
        data = json.dumps(approval, separators=(",", ":"), sort_keys=True)
        valid = _valid_key(approval["repository"], approval["environment"], approval["digest"],
                           bool(approval.get("hotfix")))
        ref = json.dumps({"id": approval["id"]})
        pipe = self.r.pipeline(transaction=True)
        pipe.set(key("approval", approval["id"]), data)
        pipe.hset(valid, approval["id"], data)
        pipe.expire(valid, valid_for + GRACE, nx=True)  # a new set has no TTL yet
        pipe.expire(valid, valid_for + GRACE, gt=True)  # never shorten a longer-lived one
        # GT adds a new digest and only ever moves an existing one's expiry later
        pipe.zadd(key("approvals", "pending", approval["repository"]),
                  {approval["digest"]: _ms(approval["expires_at"])}, gt=True)
        for stream in (key("approvals", "all"), key("approvals", "repo", approval["repository"])):
            pipe.xadd(stream, {"d": ref}, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()

    def pending_digests(self, repository: str, now_ms: int) -> set[str]:
        """Digests of a repository with an approval not yet expired (withdrawn ones included:
        retention keeps them until the expiry, erring on the side of keeping)."""
        pending = key("approvals", "pending", repository)
        self.r.zremrangebyscore(pending, "-inf", now_ms)
        return set(self.r.zrangebyscore(pending, now_ms, "+inf"))

    def get(self, approval_id: str) -> dict[str, Any] | None:
        """One approval (withdrawn and expired ones too)."""
        raw = self.r.get(key("approval", approval_id))
        return json.loads(raw) if raw else None

    def valid_for(self, repository: str, environment: str, digest: str, hotfix: bool = False
                  ) -> list[dict[str, Any]]:
        """The approvals (`hotfix`: the hotfix approvals) of a digest for an environment that
        are not withdrawn (expired ones included until Redis drops the set: the gate compares
        `expires_at` with now)."""
        raw = self.r.hvals(_valid_key(repository, environment, digest, hotfix))
        return [json.loads(item) for item in raw]

    def withdraw(self, approval_id: str, actor: str | None, at: str
                 ) -> tuple[dict[str, Any] | None, bool]:
        """(the record, whether this call withdrew it): None when unknown; a record already
        withdrawn is returned unchanged."""
        record_key = key("approval", approval_id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(record_key)
                    raw = pipe.get(record_key)
                    if raw is None:
                        return None, False
                    record = json.loads(raw)
                    if record.get("withdrawn_at"):
                        return record, False
                    record.update(withdrawn_at=at, withdrawn_by=actor)
                    pipe.multi()
                    pipe.set(record_key, json.dumps(record, separators=(",", ":"),
                                                    sort_keys=True))
                    pipe.hdel(_valid_key(record["repository"], record["environment"],
                                         record["digest"], bool(record.get("hotfix"))),
                              approval_id)
                    pipe.execute()
                    return record, True
                except redis.WatchError:
                    continue

    def list(self, repository: str | None, environment: str | None, digest: str | None,
             limit: int, cursor: str | None, visible: Visible | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """Approvals newest first, filtered, of the repositories `visible` accepts."""
        stream = key("approvals", "repo", repository) if repository else key("approvals", "all")

        def wanted(item: dict[str, Any]) -> bool:
            return ((environment is None or item["environment"] == environment)
                    and (digest is None or item["digest"] == digest))

        keep = None if environment is None and digest is None else wanted
        seen = (lambda a: visible(a.get("repository"))) if visible else None
        return page(self.r, stream, limit, cursor, both(keep, seen), load=self._load)

    def _load(self, refs: builtins.list[dict[str, Any]]
              ) -> builtins.list[dict[str, Any] | None]:
        raw = self.r.mget([key("approval", ref["id"]) for ref in refs])
        return [json.loads(r) if r else None for r in raw]
