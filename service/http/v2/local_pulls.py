"""Pulls answered by the gateway itself when it can read the registry's storage.

After the usual authentication and authorization (service.http.security), a blob GET whose blob
is linked in *that* repository is sent from its data file with `sendfile` (a
`wsgi.file_wrapper`, which gunicorn hands to the kernel: no byte passes through Python), a
single `Range` included; a manifest GET/HEAD whose digest is a revision of that repository
(by digest, or the digest its tag's current link names) is answered from the process's
content-addressed cache (service.core.manifest_cache). Both check the registry's own link files on
every request (service.registry.storage), so content deleted or unlinked anywhere — through
the gateway, by retention, behind it — is never served. A pull event is recorded for each
(service.core.pull_events), as the registry would have.

Every function here answers None when it cannot answer exactly as the registry would
(storage unreadable, link or file missing, a conditional request, several ranges, an Accept
that does not name the stored type, a cache miss): the proxy then asks the registry, as it
did before, and its answer is the authority.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from flask import Response, current_app, g, request

from service.core.manifest_cache import served_entry
from service.core.pull_events import pull_event
from service.http import clientaddr
from service.obs import metrics
from service.registry.routes import V2Route
from service.services import Services

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
CONDITIONAL = ("If-None-Match", "If-Match", "If-Modified-Since", "If-Unmodified-Since",
               "If-Range")
RANGE_RE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
BLOB_TYPE = "application/octet-stream"


def _svc() -> Services:
    return current_app.extensions["tagwarden"]


def _conditional() -> bool:
    headers = request.headers
    return any(name in headers for name in CONDITIONAL)


def record_pull(svc: Services, name: str, digest: str, media_type: str, size: int,
                tag: str | None = None) -> None:
    """Queue the pull event the registry would have sent for this request."""
    req = {"addr": clientaddr.client_address(request.environ, svc.settings.trust_forwarded),
           "method": request.method, "useragent": request.headers.get("User-Agent"),
           "id": request.environ.get("tagwarden.request_id")}
    svc.pulls.record(pull_event(name, digest, media_type, size, tag, req, g.get("actor_name")))


# -- blobs -----------------------------------------------------------------------------------
def byte_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """(first, last) of a single satisfiable `Range`, None without one, False for anything
    else (several ranges, bad syntax, unsatisfiable: the registry answers those)."""
    if header is None:
        return None
    match = RANGE_RE.match(header.strip())
    if not match or size == 0:
        return False
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            return False
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or (last and end < start):
        return False
    return start, min(end, size - 1)


def blob_headers(digest: str) -> list[tuple[str, str]]:
    """The headers distribution 2.8 sends with a blob (seen), minus length and range."""
    return [("Accept-Ranges", "bytes"), ("Cache-Control", "max-age=31536000"),
            ("Content-Type", BLOB_TYPE), ("Docker-Content-Digest", digest),
            API_VERSION, ("Etag", f'"{digest}"'), ("X-Content-Type-Options", "nosniff")]


def sends_copy(mode: str, environ: dict[str, Any]) -> bool:
    """Copy the blob (read, write) rather than `sendfile` it? On loopback a copy is faster:
    the receiver's copy out of sendfile's page-cache pages (4 KiB fragments) is charged to
    the sender, and a single stream measured 0.73x the registry with sendfile, 1.12x with
    1 MiB copies (BENCHMARKS.md); over a NIC sendfile saves the process a copy."""
    if mode != "auto":
        return mode == "copy"
    try:
        return ipaddress.ip_address(clientaddr.peer_address(environ)).is_loopback
    except ValueError:
        return False  # a unix socket: no TCP receive path to pay for


def copied(file: BinaryIO, length: int, chunk: int) -> Iterator[bytes]:
    """`length` bytes of the open blob file in chunks, the file closed at the end (or when
    the client goes away and the server closes the body)."""
    try:
        left = length
        while left > 0:
            data = file.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data
    finally:
        file.close()


def blob(route: V2Route) -> Response | None:
    """A blob GET sent from the storage with sendfile, or None (the registry answers)."""
    svc = _svc()
    storage = svc.storage
    if storage is None or request.method != "GET" or _conditional():
        return None
    digest = route.ref
    if not storage.blob_linked(route.name, digest):
        return None
    opened = storage.open_blob(digest)
    if opened is None:
        return None
    file, size = opened
    wanted = byte_range(request.headers.get("Range"), size)
    if wanted is False:
        file.close()
        return None
    status, length, extra = 200, size, []
    if wanted:
        first, last = wanted
        file.seek(first)
        status, length = 206, last - first + 1
        extra = [("Content-Range", f"bytes {first}-{last}/{size}")]
    copy = sends_copy(svc.settings.blob_send, request.environ)
    if copy:
        body: Any = copied(file, length, svc.settings.proxy_chunk_size)
    else:
        body = request.environ["wsgi.file_wrapper"](file, svc.settings.proxy_chunk_size)
    resp = Response(body, status=status, direct_passthrough=True)
    resp.headers.clear()
    for key, value in [*blob_headers(digest), ("Content-Length", str(length)), *extra]:
        resp.headers.add(key, value)
    metrics.local_blob(length, copied=copy)
    record_pull(svc, route.name, digest, BLOB_TYPE, size)
    return resp


# -- manifests -------------------------------------------------------------------------------
def accepted(media_type: str) -> bool:
    """Does the client's Accept name the stored type (split on commas, parameters and q=
    ignored, as distribution reads it)? Otherwise the registry answers: it converts a
    schema2 manifest fetched by tag, or says MANIFEST_UNKNOWN for an OCI one."""
    for header in request.headers.getlist("Accept"):
        for item in header.split(","):
            if item.split(";", 1)[0].strip().lower() == media_type:
                return True
    return False


def resolve(route: V2Route) -> tuple[str, str | None] | None:
    """(digest, tag or None) a manifest request names, when the repository links it now."""
    storage = _svc().storage
    if storage is None:
        return None
    if ":" in route.ref:
        return (route.ref, None) if storage.manifest_linked(route.name, route.ref) else None
    digest = storage.tag_digest(route.name, route.ref)
    return (digest, route.ref) if digest else None


def manifest(route: V2Route) -> Response | None:
    """A manifest GET/HEAD answered from the cache, or None (the registry answers; a GET's
    answer then fills the cache through `remember`)."""
    svc = _svc()
    if svc.storage is None or _conditional():
        return None
    found = resolve(route)
    if found is None:
        return None
    digest, tag = found
    g.manifest_digest = digest  # for `remember`, should the registry answer instead
    entry = svc.manifest_cache.get(digest)
    if entry is None or not accepted(entry.media_type):
        return None
    resp = Response(entry.body if request.method == "GET" else b"", status=200)
    resp.headers.clear()
    for key, value in entry.headers:
        resp.headers.add(key, value)
    metrics.manifest_cache_hit()
    record_pull(svc, route.name, digest, entry.media_type, len(entry.body), tag)
    return resp


def remember(upstream: Any, headers: list[tuple[str, str]]) -> None:
    """Keep a manifest the registry just served for a GET (already read), when its bytes are
    the digest the repository links."""
    digest = g.get("manifest_digest")
    entry = digest and served_entry(digest, upstream.status, headers, upstream.data)
    if entry:
        _svc().manifest_cache.put(digest, entry)
