"""Registry v2 client on a pooled urllib3 connection manager."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.util.retry import Retry

from service.domain.errors import RegistryUnavailable
from service.obs.logs import current_request_id
from service.registry.limits import parse_manifest

MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[1::2]
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# headers of one HTTP connection, not of the answer (RFC 9110 7.6.1): never relayed or kept
HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "trailers", "transfer-encoding", "upgrade"))
# a registry answer's headers that are not relayed to clients: the connection's, and the
# answer's own date and server (the gateway's server answers)
RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}
READ_RETRY_DELAYS = (0.02, 0.05, 0.1, 0.2)
# Pooled keep-alive connections can be closed by the registry while idle; a request that
# can be replayed (no streamed body) is retried on a fresh connection instead of failing.
REPLAYABLE = Retry(total=2, connect=2, read=2, status=0, other=0, redirect=False,
                   raise_on_status=False)


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: bytes, media type and their digest."""

    body: bytes
    media_type: str
    digest: str
    # the registry's response headers when it was just fetched (what a cache keeps of it)
    headers: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def is_index(self) -> bool:
        """True for a manifest list / OCI index."""
        return self.media_type in INDEX_TYPES

    def json(self) -> dict[str, Any]:
        """The manifest parsed (never re-serialized for writing); ManifestTooComplex (a
        ValueError) when its structure is absurd."""
        return parse_manifest(self.body)


def sha256_digest(data: bytes) -> str:
    """The registry digest of some bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """Talks to one upstream registry over a shared keep-alive connection pool."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 2.0,
        pool_size: int = 64,
        blocksize: int = 1024 * 1024,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.netloc = parts.netloc
        self.timeout = urllib3.Timeout(connect=connect_timeout, read=timeout)
        self.pool = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, block=False, retries=False, blocksize=blocksize
        )

    # -- raw access, used by the /v2 proxy -------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | IO[bytes] | None = None,
        chunked: bool = False,
        stream: bool = True,
        timeout: urllib3.Timeout | float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request to the registry; raise RegistryUnavailable when it cannot answer."""
        headers = dict(headers or {})
        rid = current_request_id()
        if rid:
            headers.setdefault("X-Request-ID", rid)
        try:
            return self.pool.request(
                method,
                self.base_url + path,
                headers=headers,
                body=body,
                chunked=chunked,
                retries=REPLAYABLE if body is None or isinstance(body, bytes) else False,
                preload_content=not stream,
                decode_content=False,
                redirect=False,
                timeout=timeout or self.timeout,
            )
        except Urllib3Error as exc:
            raise RegistryUnavailable(f"registry unreachable: {type(exc).__name__}",
                                      reachable=False) from None

    def read(self, method: str, path: str, headers: dict[str, str] | None = None, *,
             stream: bool = False) -> urllib3.BaseHTTPResponse:
        """An idempotent read (GET or HEAD, no body), retried briefly on a 500: distribution's
        filesystem driver rewrites link files in place (truncate, then write), so a read
        racing any write of the same digest (a promotion re-puts the manifest, rewriting its
        revision link) can find the link empty and answer 500 "invalid checksum digest
        format". Measured on the bare registry: 17 % of GETs of a tag fail while another tag
        of the same digest is re-put in a loop."""
        resp = self.request(method, path, headers=headers, stream=stream)
        for delay in READ_RETRY_DELAYS:
            if resp.status != 500:
                break
            resp.drain_conn()
            resp.release_conn()
            time.sleep(delay)
            resp = self.request(method, path, headers=headers, stream=stream)
        return resp

    def ping(self, timeout: float = 2.0) -> bool:
        """True when GET /v2/ answers with the registry API version header."""
        try:
            resp = self.request("GET", "/v2/", stream=False, timeout=timeout)
        except RegistryUnavailable:
            return False
        return resp.status < 500 and bool(resp.headers.get("Docker-Distribution-API-Version"))

    # -- manifests -------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        """Fetch a manifest by tag or digest with all four types accepted; None when absent."""
        resp = self.read(
            "GET",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            headers={"Accept": ACCEPT_ALL},
        )
        if resp.status == 404:
            return None
        self._raise_for(resp, "GET manifest")
        body = resp.data
        return Manifest(body, resp.headers.get("Content-Type", ""), sha256_digest(body),
                        tuple(resp.headers.items()))

    def head_manifest(self, repository: str, reference: str) -> str | None:
        """The digest a tag or digest resolves to, or None."""
        resp = self.read(
            "HEAD",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            headers={"Accept": ACCEPT_ALL},
        )
        if resp.status == 404:
            return None
        self._raise_for(resp, "HEAD manifest")
        return resp.headers.get("Docker-Content-Digest")

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Store the exact manifest bytes under a tag or digest; returns the digest."""
        resp = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            headers={"Content-Type": manifest.media_type},
            body=manifest.body,
            stream=False,
        )
        self._raise_for(resp, "PUT manifest")
        return resp.headers.get("Docker-Content-Digest") or manifest.digest

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete a manifest by digest (removes every tag on it); False when it was absent."""
        resp = self.request("DELETE", f"/v2/{repository}/manifests/{digest}", stream=False)
        if resp.status == 404:
            return False
        self._raise_for(resp, "DELETE manifest")
        return True

    def list_tags(self, repository: str) -> list[str] | None:
        """Every tag of a repository (unsorted, as 2.8 gives them), None when unknown."""
        resp = self.read("GET", f"/v2/{repository}/tags/list")
        if resp.status == 404:
            return None
        self._raise_for(resp, "GET tags")
        return list(json.loads(resp.data).get("tags") or [])

    def catalog(self, page: int = 1000, max_pages: int = 1000) -> list[str]:
        """Every repository of the registry (its `/_catalog`, page by page)."""
        found: list[str] = []
        last = ""
        for _ in range(max_pages):
            query = f"n={page}" + (f"&last={quote(last, safe='')}" if last else "")
            resp = self.read("GET", f"/v2/_catalog?{query}")
            self._raise_for(resp, "GET catalog")
            names = [n for n in json.loads(resp.data).get("repositories") or []
                     if isinstance(n, str)]
            found.extend(names)
            if not names or not resp.headers.get("Link"):
                break
            last = names[-1]
        return found

    @staticmethod
    def _raise_for(resp: urllib3.BaseHTTPResponse, what: str) -> None:
        if resp.status < 400:
            return
        if resp.status >= 500:
            raise RegistryUnavailable(f"registry answered {resp.status} to {what}")
        detail = ""
        try:
            errors = json.loads(resp.data or b"{}").get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except (ValueError, AttributeError):
            detail = ""
        raise RegistryUnavailable(f"registry refused {what} ({resp.status}) {detail}".strip())
