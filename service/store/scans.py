"""Scan records, one active scan per digest, reports and inventories."""

from __future__ import annotations

import builtins
import json
from typing import Any

import redis

from service.store import key
from service.store.pagination import Visible, both, page

ACTIVE_TTL = 6 * 3600  # longer than a scan's timeout times its attempts
REPORT_TTL = 180 * 24 * 3600


def read_newest(target: Any, digest: str) -> Any:
    """Read a digest's most recently requested scan with a client (the reply) or queue it on a
    pipeline; `newest_id` takes the reply."""
    return target.xrevrange(key("scans", "digest", digest), count=1)


def newest_id(reply: list[Any]) -> str | None:
    """The scan id in the reply of `read_newest`, None when the digest was never scanned."""
    return json.loads(reply[0][1]["d"])["id"] if reply else None


class ScanStore:
    """Scans in Redis: records by id, indexes by repository and digest."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def claim(self, digest: str, scan_id: str) -> str | None:
        """Make `scan_id` the active scan of a digest; the active scan's id if one exists."""
        if self.r.set(key("scan-active", digest), scan_id, nx=True, ex=ACTIVE_TTL):
            return None
        return self.r.get(key("scan-active", digest)) or self.claim(digest, scan_id)

    def release(self, digest: str, scan_id: str) -> None:
        """The digest has no active scan any more (only if `scan_id` still holds it)."""
        pipe = self.r.pipeline(transaction=True)
        try:
            pipe.watch(key("scan-active", digest))
            if pipe.get(key("scan-active", digest)) == scan_id:
                pipe.multi()
                pipe.delete(key("scan-active", digest))
                pipe.execute()
        except redis.WatchError:
            pass
        finally:
            pipe.reset()

    def active_many(self, digests: list[str]) -> dict[str, str]:
        """{digest: its queued or running scan's id} for those of `digests` that have one."""
        if not digests:
            return {}
        found = self.r.mget([key("scan-active", d) for d in digests])
        return {d: s for d, s in zip(digests, found, strict=True) if s}

    def create(self, scan: dict[str, Any]) -> None:
        """Store a new scan and index it."""
        ref = json.dumps({"id": scan["id"]})
        pipe = self.r.pipeline(transaction=True)
        pipe.set(key("scan", scan["id"]), json.dumps(scan), ex=REPORT_TTL)
        for stream in (key("scans", "all"), key("scans", "repo", scan["repository"]),
                       key("scans", "digest", scan["digest"])):
            pipe.xadd(stream, {"d": ref}, maxlen=1_000_000, approximate=True)
        pipe.execute()

    def save(self, scan: dict[str, Any], inventory: dict[str, Any] | None = None) -> None:
        """Store a scan's new state (and its inventory for the SBOM); index a success."""
        pipe = self.r.pipeline(transaction=True)
        pipe.set(key("scan", scan["id"]), json.dumps(scan), ex=REPORT_TTL)
        if inventory is not None:
            pipe.set(key("scan-inventory", scan["id"]), json.dumps(inventory), ex=REPORT_TTL)
        if scan["status"] == "succeeded":
            pipe.set(key("scan-latest", scan["digest"]), scan["id"], ex=REPORT_TTL)
        pipe.execute()

    def get(self, scan_id: str) -> dict[str, Any] | None:
        """One scan."""
        raw = self.r.get(key("scan", scan_id))
        return json.loads(raw) if raw else None

    def inventory(self, scan_id: str) -> dict[str, Any] | None:
        """The package inventory a scan found (per platform)."""
        raw = self.r.get(key("scan-inventory", scan_id))
        return json.loads(raw) if raw else None

    def latest_succeeded(self, digest: str) -> dict[str, Any] | None:
        """The newest succeeded scan of a digest (what the promotion gate reads)."""
        scan_id = self.r.get(key("scan-latest", digest))
        return self.get(scan_id) if scan_id else None

    def newest(self, digest: str) -> dict[str, Any] | None:
        """The digest's most recently requested scan, whatever its status."""
        scan_id = newest_id(read_newest(self.r, digest))
        return self.get(scan_id) if scan_id else None

    def list(self, repository: str | None, digest: str | None, limit: int,
             cursor: str | None, visible: Visible | None = None
             ) -> tuple[list[dict[str, Any]], str | None]:
        """Scans newest first, filtered by repository and/or digest, and to the repositories
        `visible` accepts."""
        if digest:
            stream = key("scans", "digest", digest)
            keep = (lambda s: s["repository"] == repository) if repository else None
        elif repository:
            stream, keep = key("scans", "repo", repository), None
        else:
            stream, keep = key("scans", "all"), None
        seen = (lambda s: visible(s.get("repository"))) if visible else None
        return page(self.r, stream, limit, cursor, both(keep, seen), load=self._load)

    def _load(self, refs: builtins.list[dict[str, Any]]
              ) -> builtins.list[dict[str, Any] | None]:
        raw = self.r.mget([key("scan", ref["id"]) for ref in refs])
        return [json.loads(r) if r else None for r in raw]
