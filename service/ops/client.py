"""A small HTTP client for Tagwarden's /api/v1 (what the CI subcommands of the CLI use).

Only `requests`: importing this module never imports Flask or the service itself.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import requests

USER_AGENT = "tagwarden-cli/0.1"


def redact_url(url: str) -> str:
    """The URL without any user:password@ part (safe to print)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class ApiError(Exception):
    """A non-2xx answer: the HTTP status and the decoded error envelope."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {self.code}: {self.message}")

    @property
    def code(self) -> str:
        return str(self.body.get("code") or f"http_{self.status}")

    @property
    def message(self) -> str:
        return str(self.body.get("message") or "")

    @property
    def policy_denied(self) -> bool:
        """The API refused by policy (403 `policy_denied`)."""
        return self.status == 403 and self.body.get("code") == "policy_denied"


class ApiConnectionError(Exception):
    """The API could not be reached at all (refused, DNS, TLS, timeout)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"could not reach Tagwarden at {url}: {reason}")


class ApiClient:
    """One method per call of the promotions API; raises ApiError on non-2xx answers."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers["Accept"] = "application/json"
        token = (token or "").strip()
        self._secret = token
        self.replayed = False  # the last answer carried Idempotent-Replayed: true
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:  # never show the token
        return f"ApiClient({redact_url(self.url)!r}, timeout={self.timeout})"

    def _scrub(self, text: str) -> str:
        """Error text with the token masked (requests quotes bad header values)."""
        return text.replace(self._secret, "***") if self._secret else text

    # -- transport ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 json_body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, data: Any = None) -> dict[str, Any]:
        target = f"{self.url}{path}"
        shown = redact_url(self.url)
        try:
            resp = self.session.request(
                method, target, params={k: v for k, v in (params or {}).items() if v is not None},
                json=json_body, data=data, headers=headers, timeout=self.timeout,
            )
        except requests.Timeout:
            raise ApiConnectionError(shown, f"no answer within {self.timeout:g}s") from None
        except requests.ConnectionError as exc:
            raise ApiConnectionError(shown, self._scrub(_reason(exc))) from None
        except requests.RequestException as exc:  # invalid URL or header, redirects, ...
            raise ApiConnectionError(shown, self._scrub(f"{type(exc).__name__}: {exc}")) from None
        self.replayed = resp.headers.get("Idempotent-Replayed", "").lower() == "true"
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not 200 <= resp.status_code < 300:
            if not isinstance(body, dict):
                text = " ".join(resp.text.split())[:200]
                body = {"code": f"http_{resp.status_code}",
                        "message": text or resp.reason or "no body"}
            raise ApiError(resp.status_code, body)
        if not isinstance(body, dict):
            raise ApiError(resp.status_code, {
                "code": "invalid_response",
                "message": f"{method} {path} answered {resp.status_code} without a JSON object",
            })
        return body

    # -- calls -------------------------------------------------------------------------------
    def promote(self, body: dict[str, Any], idempotency_key: str | None = None
                ) -> dict[str, Any]:
        """POST /api/v1/promotions: the record (201) or the dry-run preview (200)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/api/v1/promotions", json_body=body, headers=headers)

    def rollback(self, body: dict[str, Any], idempotency_key: str | None = None
                 ) -> dict[str, Any]:
        """POST /api/v1/rollbacks: the rollback record."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/api/v1/rollbacks", json_body=body, headers=headers)

    def promotions(self, repository: str, environment: str | None = None,
                   limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """GET /api/v1/promotions: one page `{"items", "next_cursor"}`, newest first."""
        return self._request("GET", "/api/v1/promotions", params={
            "repository": repository, "environment": environment, "limit": limit,
            "cursor": cursor,
        })

    def iter_promotions(self, repository: str, environment: str | None = None,
                        limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Every page of the history, following `next_cursor` until it is null."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.promotions(repository, environment, limit, cursor)
            yield page
            cursor = page.get("next_cursor")
            if not cursor or cursor in seen:
                return
            seen.add(cursor)

    def promotion(self, promotion_id: str) -> dict[str, Any]:
        """GET /api/v1/promotions/{id}: one record."""
        return self._request("GET", f"/api/v1/promotions/{promotion_id}")

    def import_vulndb(self, zip_file: IO[bytes] | None, server_path: str | None,
                      rescan: bool = True) -> dict[str, Any]:
        """POST /api/v1/vulndb/imports: an uploaded OSV zip, or a path on the gateway's host."""
        fields = {"rescan": "true" if rescan else "false"}
        if zip_file is None:
            return self._request("POST", "/api/v1/vulndb/imports",
                                 data={**fields, "path": server_path})
        body = MultipartFile(fields, "file", zip_file, "osv.zip")
        return self._request("POST", "/api/v1/vulndb/imports", data=body,
                             headers={"Content-Type": body.content_type})

    def scan(self, repository: str, reference: str) -> dict[str, Any]:
        """POST /api/v1/scans: the scan of the digest (queued, or the one already running)."""
        return self._request("POST", "/api/v1/scans",
                             json_body={"repository": repository, "reference": reference})

    def get_scan(self, scan_id: str) -> dict[str, Any]:
        """GET /api/v1/scans/{id}."""
        return self._request("GET", f"/api/v1/scans/{scan_id}")

    def environments(self, repository: str, at: str | None = None) -> dict[str, Any]:
        """GET /api/v1/environments: what each environment points to (now or at `at`)."""
        return self._request("GET", "/api/v1/environments",
                             params={"repository": repository, "at": at})

    def approve(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/v1/approvals: the approval (the caller is the approver)."""
        return self._request("POST", "/api/v1/approvals", json_body=body)

    def approvals(self, **params: Any) -> dict[str, Any]:
        """GET /api/v1/approvals (repository, environment, digest, limit, cursor): one page."""
        return self._request("GET", "/api/v1/approvals", params=params)

    def withdraw_approval(self, approval_id: str) -> dict[str, Any]:
        """DELETE /api/v1/approvals/{id}: the withdrawn approval."""
        return self._request("DELETE", f"/api/v1/approvals/{approval_id}")

    def verify(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/v1/verifications: the recorded result."""
        return self._request("POST", "/api/v1/verifications", json_body=body)

    def verifications(self, **params: Any) -> dict[str, Any]:
        """GET /api/v1/verifications (repository, digest, environment, limit, cursor)."""
        return self._request("GET", "/api/v1/verifications", params=params)


class MultipartFile:
    """A multipart/form-data body streamed from a file, with a known length (so the upload
    carries Content-Length and is never held in memory whole)."""

    def __init__(self, fields: dict[str, str], name: str, file: IO[bytes], filename: str
                 ) -> None:
        self.boundary = uuid.uuid4().hex
        head = "".join(f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{k}\""
                       f"\r\n\r\n{v}\r\n" for k, v in fields.items())
        head += (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                 f"filename=\"{filename}\"\r\nContent-Type: application/zip\r\n\r\n")
        self.parts = [head.encode(), file, f"\r\n--{self.boundary}--\r\n".encode()]
        self.size = len(self.parts[0]) + os.fstat(file.fileno()).st_size + len(self.parts[2])
        self.index, self.offset = 0, 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(1024 * 1024):
            yield chunk

    def read(self, size: int = -1) -> bytes:
        """The next bytes of the body (at most `size`)."""
        size = 1024 * 1024 if size is None or size < 0 else size
        while self.index < len(self.parts):
            part = self.parts[self.index]
            if isinstance(part, bytes):
                chunk = part[self.offset:self.offset + size]
                self.offset += len(chunk)
            else:
                chunk = part.read(size)
            if chunk:
                return chunk
            self.index, self.offset = self.index + 1, 0
        return b""


def _reason(exc: requests.ConnectionError) -> str:
    """The useful part of a connection error ("Connection refused"), without urllib3's noise."""
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] ([^)\"'\]]+)", r"\[SSL[^\]]*\] ([^)\"'(]+)",
                    r"Caused by (\w+)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip().rstrip(".,")
    return text[:200] or type(exc).__name__
