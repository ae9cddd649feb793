"""Loading the OSV database: one import at a time, then rescans of what environments run."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from service.scans import request_scan
from service.services import Services
from service.store.vulndb import VulnDBSource, osv_files

log = logging.getLogger("tagwarden.vulndb")


def fingerprint(path: str) -> str:
    """Names, sizes and mtimes of the OSV files under a path (cheap change detection)."""
    h = hashlib.sha256()
    for file in osv_files(path):
        stat = Path(file).stat()
        h.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def import_vulndb(svc: Services, path: str, *, only_if_changed: bool = False,
                  rescan: bool = True) -> dict[str, Any] | None:
    """Import `path` (serialised by a Redis lock); None when unchanged and only_if_changed."""
    source = VulnDBSource(svc.redis)
    with source.lock():
        mark = f"{os.path.abspath(path)}|{fingerprint(path)}"
        if only_if_changed and source.mark() == mark:
            return None
        report = svc.vulndb.import_path(path).to_dict()
        source.set_mark(mark)
    if rescan:
        report["rescans"] = rescan_deployed(svc)
    log.info("vulnerability database v%s loaded: %s records", report["version"],
             report["records"])
    return report


def rescan_deployed(svc: Services) -> int:
    """Queue a rescan of every digest an environment points to (the DB changed)."""
    count = 0
    for repository in svc.promotions.repositories():
        for digest in set(svc.environments.digests(repository).values()):
            request_scan(svc, repository, digest, None, "vulndb-update")
            count += 1
    return count
