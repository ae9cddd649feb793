"""Loading the OSV database: one import at a time, then rescans of what environments run."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

from service.core.scans import request_scan
from service.domain.errors import Forbidden, InvalidRequest
from service.scanner.osv_export import osv_files, read_osv
from service.services import Services
from service.store.vulndb import VulnDBSource

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
        report = svc.vulndb.import_documents(read_osv(path)).to_dict()
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


MAX_ZIP_MEMBERS = 2_000_000


def check_osv_zip(file: IO[bytes]) -> int:
    """The number of .json members of an uploaded OSV zip; InvalidRequest when it is not one.
    Nothing is ever extracted: the importer reads each member in memory, at most
    MAX_RECORD_BYTES of it, so neither member names nor a zip bomb can reach the disk."""
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise InvalidRequest(f"the zip holds {len(members)} entries; at most "
                                     f"{MAX_ZIP_MEMBERS}", errors={"file": ["too many entries"]})
            count = sum(1 for m in members if not m.is_dir() and m.filename.endswith(".json"))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise InvalidRequest(f"the upload is not a zip archive: {exc}", errors={
            "file": ["an OSV export: a zip of .json advisories"]}) from None
    if count == 0:
        raise InvalidRequest("the zip holds no .json OSV advisories",
                             errors={"file": ["an OSV export: a zip of .json advisories"]})
    return count


def import_upload(svc: Services, file: IO[bytes], *, rescan: bool = True) -> dict[str, Any]:
    """Validate and import an uploaded OSV zip (the all.zip of osv.dev, or any zip of OSV
    .json files), read from a private temporary copy that is removed afterwards."""
    check_osv_zip(file)
    file.seek(0)
    workdir = tempfile.mkdtemp(prefix="tagwarden-osv-")
    try:
        with open(os.path.join(workdir, "upload.zip"), "wb") as copy:
            shutil.copyfileobj(file, copy, 1024 * 1024)
        report = import_vulndb(svc, workdir, rescan=rescan)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert report is not None
    return report


def import_server_path(svc: Services, path: str, *, rescan: bool = True) -> dict[str, Any]:
    """Import OSV files from a path on the gateway's host (an admin's choice of path)."""
    if not os.path.isabs(path):
        raise InvalidRequest(f"path {path!r} must be absolute (a path on the gateway's host)",
                             errors={"path": ["an absolute path"]})
    root = svc.settings.vulndb_import_root
    if not root:
        raise Forbidden("server-side paths are off: set TAGWARDEN_VULNDB_IMPORT_ROOT on the "
                        "gateway to the directory they may name, or upload the zip as `file`")
    real, allowed = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, allowed]) != allowed:
        raise Forbidden(f"path {path!r} is outside TAGWARDEN_VULNDB_IMPORT_ROOT ({root})")
    try:
        report = import_vulndb(svc, path, rescan=rescan)
    except (FileNotFoundError, NotADirectoryError, zipfile.BadZipFile) as exc:
        raise InvalidRequest(f"nothing to import at {path!r} on the gateway's host: {exc}",
                             errors={"path": ["a directory or file with OSV .json/.zip files"]}
                             ) from None
    assert report is not None
    return report
