"""The scan job: manifest (each platform of an index) → layers streamed → inventory → OSV."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import redis
from rq import get_current_job

from service.core import notify
from service.domain.durations import format_time
from service.domain.errors import RegistryUnavailable
from service.domain.policy_model import SEVERITIES
from service.obs import metrics
from service.registry.client import Manifest
from service.scanner.errors import ScanError
from service.scanner.inventory import Inventory, inventory_of_streams
from service.scanner.matching import match_inventory
from service.services import Services
from workers.context import services

log = logging.getLogger("tagwarden.scan")
SKIP_PLATFORMS = {("unknown", "unknown")}  # buildkit attestation manifests


class VerifiedBlob:
    """A streamed registry blob whose bytes are hashed as they are read and checked at EOF.

    The hashing runs on ``hasher``, which must have exactly one thread (its queue keeps the
    chunks in order): hashlib releases the GIL on large buffers, so hashing one chunk overlaps
    inflating it on the reading thread."""

    MAX_PENDING = 4  # chunks handed to the hasher and not yet hashed: bounds memory

    def __init__(self, resp: Any, digest: str, hasher: ThreadPoolExecutor) -> None:
        self.resp, self.digest, self.sha = resp, digest, hashlib.sha256()
        self.hasher = hasher
        self.pending: deque[Future[None]] = deque()
        self.done = False

    def read(self, size: int = -1) -> bytes:
        """Read from the registry; at the end, refuse content whose digest differs."""
        data = self.resp.read(size if size and size > 0 else 1 << 20)
        if data:
            self.pending.append(self.hasher.submit(self.sha.update, data))
            if len(self.pending) > self.MAX_PENDING:
                self.pending.popleft().result()
        elif not self.done:
            self.done = True
            while self.pending:
                self.pending.popleft().result()
            if "sha256:" + self.sha.hexdigest() != self.digest:
                raise ScanError(f"layer {self.digest} content does not match its digest")
        return data


def _platform(descriptor: dict[str, Any]) -> str:
    p = descriptor.get("platform") or {}
    name = f"{p.get('os', 'unknown')}/{p.get('architecture', 'unknown')}"
    return name + (f"/{p['variant']}" if p.get("variant") else "")


def _parsed(manifest: Manifest) -> dict[str, Any]:
    """The manifest parsed, within the structure limits of service.registry.limits."""
    try:
        doc = manifest.json()
    except (ValueError, RecursionError) as exc:
        raise ScanError(f"manifest {manifest.digest} cannot be scanned: {exc}") from None
    if not isinstance(doc, dict):
        raise ScanError(f"manifest {manifest.digest} is not a JSON object")
    return doc


def _images(svc: Services, repository: str, manifest: Manifest) -> list[tuple[str, Manifest]]:
    """(platform, image manifest) pairs: one for an image, one per platform for an index."""
    if not manifest.is_index:
        return [("", manifest)]
    images = []
    for child in _parsed(manifest).get("manifests", []):
        p = child.get("platform") or {}
        if (p.get("os", "unknown"), p.get("architecture", "unknown")) in SKIP_PLATFORMS:
            continue
        found = svc.registry.get_manifest(repository, child["digest"])
        if found is None:
            raise ScanError(f"index child {child['digest']} is missing from {repository}")
        if found.is_index:
            raise ScanError("nested indexes are not scanned")
        images.append((_platform(child), found))
    return images


def _inventory(svc: Services, repository: str, image: Manifest, budget: list[int]) -> Inventory:
    layers = _parsed(image).get("layers") or []
    opened: list[Any] = []

    def streams(hasher: ThreadPoolExecutor) -> Any:
        for layer in layers:
            if budget[0] <= 0:
                raise ScanError("image exceeds the scan byte cap (TAGWARDEN_SCAN_MAX_BYTES)")
            resp = svc.registry.request("GET", f"/v2/{repository}/blobs/{layer['digest']}")
            opened.append(resp)
            if resp.status != 200:
                raise ScanError(f"layer {layer['digest']} answered {resp.status}")
            blob = VerifiedBlob(resp, layer["digest"], hasher)
            yield layer["digest"], layer.get("mediaType", ""), blob

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-sha256") as hasher:
            inventory = inventory_of_streams(streams(hasher), max_bytes=budget[0])
    finally:
        for resp in opened:
            resp.release_conn()
    budget[0] -= sum(int(layer.get("size") or 0) for layer in layers)
    return inventory


def _summary(findings: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(SEVERITIES, 0)
    seen = set()
    for f in findings:
        k = (f["id"], f["package"], f["installed_version"])
        if k not in seen:
            seen.add(k)
            counts[f["severity"]] += 1
    return counts


def external_findings(svc: Services, repository: str, image: Manifest) -> list[dict[str, Any]]:
    """Findings of a Harbor-compatible scanner adapter (Trivy, Clair, ...) for one image."""
    from service.scanner.harbor import HarborScannerClient

    client = HarborScannerClient(svc.settings.scanner_url,
                                 timeout=min(60, svc.settings.scan_timeout),
                                 poll_limit_seconds=svc.settings.scan_timeout)
    found = client.scan(svc.settings.scanner_registry_url or svc.settings.registry_url, None,
                        repository, image.digest, image.media_type)
    return [{**f, "scanner": "external"} for f in found]


def scan_image(svc: Services, scan: dict[str, Any]) -> dict[str, Any]:
    """Inventory and findings of every platform of the scanned digest."""
    repository, digest = scan["repository"], scan["digest"]
    builtin = svc.settings.scanner_mode in ("builtin", "both") or not svc.settings.scanner_url
    external = svc.settings.scanner_mode in ("external", "both") and svc.settings.scanner_url
    if builtin and svc.vulndb.current_version() is None:
        raise ScanError("no vulnerability database loaded: set TAGWARDEN_VULNDB or run "
                        "`tagwarden vulndb import PATH`")
    manifest = svc.registry.get_manifest(repository, digest)
    if manifest is None:
        raise ScanError(f"{digest} is no longer in {repository}")
    budget = [svc.settings.scan_max_bytes]
    findings, platforms, inventories = [], [], {}
    for platform, image in _images(svc, repository, manifest):
        inventory = _inventory(svc, repository, image, budget) if builtin else Inventory()
        found = [f.to_dict() for f in match_inventory(inventory, svc.vulndb)] if builtin else []
        if external:
            found.extend(external_findings(svc, repository, image))
        for f in found:
            if platform:
                f["platform"] = platform
        findings.extend(found)
        inventories[platform or "default"] = inventory.to_dict()
        platforms.append({"platform": platform or None, "digest": image.digest,
                          "packages": len(inventory.packages), "findings": len(found),
                          "os": inventory.os_release.ecosystem if inventory.os_release else None})
    info = svc.vulndb.info()
    return {"findings": findings, "platforms": platforms, "inventories": inventories,
            "packages": sum(p["packages"] for p in platforms), "summary": _summary(findings),
            "vulndb": {"version": info.get("version"), "loaded_at": info.get("loaded_at"),
                       "records": info.get("records")}}


def run_scan(scan_id: str) -> str:
    """RQ job: run one scan; transient failures are retried, others fail with a reason."""
    svc = services()
    scan = svc.scans.get(scan_id)
    if scan is None or scan["status"] in ("succeeded", "failed"):
        return "nothing to do"
    scan.update(status="running", started_at=format_time(datetime.now(UTC)), error=None)
    svc.scans.save(scan)
    started = time.monotonic()
    try:
        result = scan_image(svc, scan)
    except (RegistryUnavailable, redis.RedisError) as exc:
        job = get_current_job()
        if job is not None and (job.retries_left or 0) > 0:
            scan["status"] = "queued"
            svc.scans.save(scan)
            raise  # RQ's Retry tries again later
        return _fail(svc, scan, f"registry or store unavailable: {exc}", started)
    except ScanError as exc:
        return _fail(svc, scan, str(exc), started)
    except Exception as exc:  # a bug must not leave the scan "running" forever
        log.exception("scan %s crashed", scan_id)
        return _fail(svc, scan, f"internal scanner error ({type(exc).__name__})", started)
    inventories = result.pop("inventories")
    scan.update(result, status="succeeded", finished_at=format_time(datetime.now(UTC)),
                duration_seconds=round(time.monotonic() - started, 3))
    svc.scans.save(scan, inventories)
    svc.scans.release(scan["digest"], scan_id)
    notify.emit(svc, "scan.completed", {k: v for k, v in scan.items() if k != "findings"})
    metrics.scan("succeeded", time.monotonic() - started)
    return "succeeded"


def _fail(svc: Services, scan: dict[str, Any], error: str, started: float) -> str:
    scan.update(status="failed", error=error, finished_at=format_time(datetime.now(UTC)))
    svc.scans.save(scan)
    svc.scans.release(scan["digest"], scan["id"])
    notify.emit(svc, "scan.failed", scan)
    metrics.scan("failed", time.monotonic() - started)
    log.warning("scan %s failed: %s", scan["id"], error)
    return "failed"
