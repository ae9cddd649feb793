"""Scan requests: resolve the reference, one active scan per digest, queue the RQ job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core import jobs
from service.domain.durations import format_time
from service.domain.errors import InvalidRequest, NotFound
from service.domain.tags import valid_repository, valid_tag
from service.services import Services

# A failed scan-on-push is not queued again on every push of the digest before this long.
RETRY_FAILED_AFTER = timedelta(minutes=10)


def new_scan(repository: str, digest: str, actor: str | None, reason: str) -> dict[str, Any]:
    """A queued scan record."""
    return {
        "id": "scn_" + uuid.uuid4().hex[:20], "repository": repository, "digest": digest,
        "status": "queued", "error": None, "reason": reason, "requested_by": actor,
        "created_at": format_time(datetime.now(UTC)), "started_at": None,
        "finished_at": None, "summary": None, "packages": None, "findings": [],
        "vulndb": None, "platforms": [],
    }


def resolve(svc: Services, repository: str, reference: str) -> str:
    """The manifest digest a tag or digest names in the registry (404 when absent)."""
    if not valid_repository(repository):
        raise InvalidRequest(f"invalid repository name {repository!r}",
                             errors={"repository": ["not a registry repository name"]})
    if not reference.startswith("sha256:") and not valid_tag(reference):
        raise InvalidRequest(f"invalid reference {reference!r}",
                             errors={"reference": ["a tag or sha256:<hex> digest"]})
    digest = svc.registry.head_manifest(repository, reference)
    if digest is None:
        raise NotFound(f"{reference!r} not found in repository {repository}")
    return digest


def request_scan(svc: Services, repository: str, digest: str, actor: str | None,
                 reason: str = "requested") -> tuple[dict[str, Any], bool]:
    """(scan, created): the active scan of the digest, or a new queued one."""
    scan = new_scan(repository, digest, actor, reason)
    active = svc.scans.claim(digest, scan["id"])
    if active is not None:
        existing = svc.scans.get(active)
        if existing is not None and existing["status"] in ("queued", "running"):
            return existing, False
        svc.scans.release(digest, active)
        return request_scan(svc, repository, digest, actor, reason)
    svc.scans.create(scan)  # the state the job reads is written before the job exists
    jobs.enqueue_scan(svc.queue, scan["id"], svc.settings.scan_timeout)
    return scan, True


def scan_on_push(svc: Services, repository: str, digest: str) -> dict[str, Any] | None:
    """Queue a scan for a pushed manifest unless it is already scanned against this DB, or its
    last scan failed a moment ago against this DB (pushing the digest again changes nothing)."""
    latest = svc.scans.latest_succeeded(digest)
    db_version = svc.vulndb.current_version()
    if latest is not None and (latest.get("vulndb") or {}).get("version") == db_version:
        return None
    if _failed_recently(svc, svc.scans.newest(digest)):
        return None
    scan, _ = request_scan(svc, repository, digest, None, "push")
    return scan


def _failed_recently(svc: Services, scan: dict[str, Any] | None) -> bool:
    """True when `scan` failed less than RETRY_FAILED_AFTER ago and no vulnerability database
    was loaded since (a database loaded since deserves a new try)."""
    if scan is None or scan["status"] != "failed" or not scan.get("finished_at"):
        return False
    finished = _parse_time(scan["finished_at"])
    if datetime.now(UTC) - finished > RETRY_FAILED_AFTER:
        return False
    loaded_at = svc.vulndb.info()["loaded_at"]
    # loaded_at has whole seconds: within the same second, count the load as later
    return loaded_at is None or _parse_time(loaded_at) + timedelta(seconds=1) <= finished


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
