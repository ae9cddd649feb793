"""Chunked blob uploads as the OCI distribution spec wants them, on top of distribution 2.8.

The registry ignores `Content-Range` and cancels an upload on a stale `_state`; the gateway
knows each session's offset and latest state (service.store.uploads), so an out-of-order or
repeated chunk is refused with 416 and the current `Range` before the registry sees a byte,
and the session survives it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from service.core import catalog
from service.registry.routes import DIGEST_RE, UPLOAD_ID_RE
from service.services import Services

CONTENT_RANGE_RE = re.compile(
    r"^(?:bytes[ =])?([0-9]{1,18})-([0-9]{1,18})(?:/(?:[0-9]{1,18}|\*))?$")
# A mount without `from` (OCI "automatic content discovery"): at most this many repositories
# the caller may read are asked whether they hold the blob.
MOUNT_CANDIDATES = 100
LOCATION_RE = re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<uuid>[^/?]+)$")


@dataclass(frozen=True)
class Refusal:
    """A chunk the gateway answers itself: status, registry code, and where the session is."""

    status: int
    code: str
    message: str
    session: dict[str, Any] | None = None


def range_of(offset: int) -> str:
    """The `Range` header of a session holding `offset` bytes (`0-0` when empty, as the
    registry says)."""
    return f"0-{max(offset - 1, 0)}"


def parse_content_range(header: str) -> tuple[int, int] | None:
    """(first, last) byte of a `Content-Range` (`0-1023`, also `bytes 0-1023/*`); None when
    it is not one."""
    match = CONTENT_RANGE_RE.match(header.strip())
    if not match:
        return None
    first, last = int(match.group(1)), int(match.group(2))
    return (first, last) if last >= first else None


def session_of(svc: Services, repository: str, uuid: str) -> dict[str, Any] | None:
    """The recorded session, only when it belongs to this repository (an upload id of another
    repository is no session here, and its state is never used)."""
    session = svc.uploads.get(uuid)
    return session if session and session.get("repository") == repository else None


def check_chunk(svc: Services, repository: str, uuid: str, content_range: str | None,
                length: int | None) -> Refusal | dict[str, Any] | None:
    """Before a PATCH: a Refusal (416 out of order, 400 malformed), the known session to
    forward with, or None (unknown session or no `Content-Range`: the registry decides)."""
    session = session_of(svc, repository, uuid)
    if content_range is None:
        return None
    parsed = parse_content_range(content_range)
    if parsed is None:
        return Refusal(400, "BLOB_UPLOAD_INVALID", "invalid Content-Range "
                       "(expected <first>-<last>)", session)
    first, last = parsed
    if length is not None and last - first + 1 != length:
        return Refusal(416, "BLOB_UPLOAD_INVALID", f"Content-Range {first}-{last} does not "
                       f"match Content-Length {length}", session)
    if session is None:
        return None
    if first != session["offset"]:
        return Refusal(416, "BLOB_UPLOAD_INVALID", f"chunk starts at {first}; the upload holds "
                       f"{session['offset']} bytes, send the chunk starting there", session)
    return session


def location_session(location: str | None) -> tuple[str, str, str] | None:
    """(repository, uuid, state) named by an upload Location of the registry."""
    if not location:
        return None
    parts = urlsplit(location)
    match = LOCATION_RE.search(parts.path)
    state = parse_qs(parts.query).get("_state", [""])[0]
    if not match or not state or not UPLOAD_ID_RE.match(match.group("uuid")):
        return None
    return match.group("name"), match.group("uuid"), state


def offset_after(range_header: str | None, before: int, sent: int) -> int:
    """The bytes a session holds after an answer: its `Range` (`0-0` is 0 or 1 byte: what was
    sent tells them apart)."""
    parsed = parse_content_range(range_header or "")
    if parsed is None or parsed[1] == 0:
        return min(before + sent, 1) if parsed else before + sent
    return parsed[1] + 1


def record_answer(svc: Services, repository: str, method: str, status: int,
                  headers: Any, before: int = 0, sent: int = 0,
                  uuid: str | None = None) -> None:
    """After the registry answered an upload request: record the session (202/204 with a
    Location), forget it when it ended (201 finished, 204 on DELETE cancelled, 404 gone)."""
    if uuid and (status == 201 or status == 404 or (method == "DELETE" and status == 204)):
        svc.uploads.drop(uuid)
        return
    if status not in (202, 204):
        return
    found = location_session(headers.get("Location"))
    if found is None or found[0] != repository:
        return
    _, new_uuid, state = found
    svc.uploads.put(new_uuid, repository, offset_after(headers.get("Range"), before, sent),
                    state)


def mount_source(svc: Services, repository: str, digest: str, principal: Any) -> str | None:
    """For a mount that names no source: a repository the caller may read that holds the
    blob (catalog order, MOUNT_CANDIDATES at most), else None (an ordinary upload)."""
    if not svc.settings.automatic_mount or principal is None or not DIGEST_RE.match(digest):
        return None
    candidates = catalog.scan(svc.registry, "", MOUNT_CANDIDATES,
                              lambda r: r != repository and principal.covers(r))
    for candidate in candidates:
        found = svc.registry.read("HEAD", f"/v2/{candidate}/blobs/{digest}")
        if found.status == 200:
            return candidate
    return None
