"""A small Harbor pluggable scanner adapter (spec v1.1/v1.2) on loopback, for tests.

Follows goharbor/pluggable-scanner-spec (api/spec/scanner-adapter-openapi-v1.2.yaml):
``GET /api/v1/metadata``, ``POST /api/v1/scan`` (request body and Content-Type checked
strictly: 400 + ``{"error": {"message"}}`` on bad input, 422 on a bad field value, 501 for an
artifact type no capability consumes), ``GET /api/v1/scan/{id}/report`` (the first
``pending_polls`` polls answer 302 with ``Refresh-After``, then 200 with a harmonized report of
the configured ``vulnerabilities``; 404 for unknown ids; 501 for an Accept nothing produces).
Standard library only. Every request is recorded in ``requests``.

    with HarborDouble(vulnerabilities=[...], pending_polls=2, refresh_after=0) as double:
        client = HarborScannerClient(double.url)
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
VULN_REPORT_MIME = "application/vnd.security.vulnerability.report; version=1.1"
NATIVE_REPORT_MIME = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
METADATA_MIME = "application/vnd.scanner.adapter.metadata+json; version=1.1"
SCAN_REQUEST_MIMES = {
    "application/vnd.scanner.adapter.scan.request+json; version=1.0": "1.0",
    "application/vnd.scanner.adapter.scan.request+json; version=1.1": "1.1",
}
SCAN_RESPONSE_MIME = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
ERROR_MIME = "application/vnd.scanner.adapter.error+json; version=1.0"

SEVERITIES = ("Unknown", "Negligible", "Low", "Medium", "High", "Critical")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_REPORT_PATH = re.compile(r"^/api/v1/scan/([^/]+)/report$")


def default_capabilities() -> list[dict[str, Any]]:
    """What harbor-scanner-trivy advertises for vulnerabilities (v1.2 with ``type``)."""
    return [
        {
            "type": "vulnerability",
            "consumes_mime_types": [OCI_MANIFEST, DOCKER_MANIFEST],
            "produces_mime_types": [NATIVE_REPORT_MIME, VULN_REPORT_MIME],
        }
    ]


def _norm(mime: str) -> str:
    parts = [p.strip() for p in mime.split(";") if p.strip()]
    return "; ".join([parts[0].lower(), *(p.replace(" ", "").lower() for p in parts[1:])])


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Scan:
    request: dict[str, Any]
    polls: int = 0


@dataclass
class HarborDouble:
    """Configure, ``start()`` (or ``with``), point a client at ``url``, ``stop()``."""

    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    pending_polls: int = 0
    refresh_after: int | str | None = 1
    capabilities: list[dict[str, Any]] = field(default_factory=default_capabilities)
    scanner: dict[str, str] = field(
        default_factory=lambda: {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.0"}
    )
    properties: dict[str, str] = field(
        default_factory=lambda: {"harbor.scanner-adapter/scanner-type": "os-package-vulnerability"}
    )
    # operation ("metadata" | "scan" | "report") -> (status, message): answered with the envelope
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    report_body: bytes | None = None  # sent verbatim instead of the generated report
    requests: list[RecordedRequest] = field(default_factory=list)
    scans: dict[str, _Scan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "double not started"
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> HarborDouble:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> HarborDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- views -------------------------------------------------------------------------------
    def seen(self, method: str, prefix: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def report_for(self, scan: _Scan) -> dict[str, Any]:
        worst = max(
            (SEVERITIES.index(v.get("severity", "Unknown")) for v in self.vulnerabilities),
            default=0,
        )
        return {
            "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "artifact": scan.request["artifact"],
            "scanner": self.scanner,
            "severity": SEVERITIES[worst],
            "vulnerabilities": self.vulnerabilities,
        }

    # -- request handling (called on server threads) -----------------------------------------
    def handle(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests.append(req)
            if req.method == "GET" and req.path == "/api/v1/metadata":
                return self._metadata()
            if req.method == "POST" and req.path == "/api/v1/scan":
                return self._accept_scan(req)
            m = _REPORT_PATH.match(req.path)
            if req.method == "GET" and m:
                return self._report(m.group(1), req)
            return _error(404, f"no route for {req.method} {req.path}")

    def _metadata(self) -> tuple[int, dict[str, str], bytes]:
        if "metadata" in self.failures:
            return _error(*self.failures["metadata"])
        body = {
            "scanner": self.scanner,
            "capabilities": self.capabilities,
            "properties": self.properties,
        }
        return 200, {"Content-Type": METADATA_MIME}, json.dumps(body).encode()

    def _accept_scan(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        ctype = _norm(req.headers.get("content-type", ""))
        versions = {_norm(k): v for k, v in SCAN_REQUEST_MIMES.items()}
        if ctype not in versions:
            return _error(400, f"unsupported Content-Type {req.headers.get('content-type')!r}")
        try:
            body = json.loads(req.body)
        except ValueError as exc:
            return _error(400, f"invalid JSON: {exc}")
        problem = _scan_request_problem(body, versions[ctype])
        if problem:
            return _error(400, problem)
        artifact = body["artifact"]
        if not _DIGEST.match(artifact["digest"]):
            return _error(422, f"invalid artifact.digest {artifact['digest']!r}")
        consumed = {_norm(m) for c in self.capabilities for m in c["consumes_mime_types"]}
        if _norm(artifact["mime_type"]) not in consumed:
            return _error(501, f"no capability consumes {artifact['mime_type']}")
        if "scan" in self.failures:
            return _error(*self.failures["scan"])
        scan_id = str(uuid.uuid4())
        self.scans[scan_id] = _Scan(request=body)
        return 202, {"Content-Type": SCAN_RESPONSE_MIME}, json.dumps({"id": scan_id}).encode()

    def _report(self, scan_id: str, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        scan = self.scans.get(scan_id)
        if scan is None:
            return _error(404, f"unknown scan request id {scan_id}")
        accept = _norm(req.headers.get("accept", ""))
        produced = {_norm(m) for c in self.capabilities for m in c["produces_mime_types"]}
        if accept not in produced or accept not in (
            _norm(VULN_REPORT_MIME),
            _norm(NATIVE_REPORT_MIME),
        ):
            return _error(501, f"cannot produce {req.headers.get('accept')!r}")
        scan.polls += 1
        if scan.polls <= self.pending_polls:
            headers = {}
            if self.refresh_after is not None:
                headers["Refresh-After"] = str(self.refresh_after)
            return 302, headers, b""
        if "report" in self.failures:
            return _error(*self.failures["report"])
        if self.report_body is not None:
            return 200, {"Content-Type": req.headers["accept"]}, self.report_body
        return (
            200,
            {"Content-Type": req.headers["accept"]},
            json.dumps(self.report_for(scan)).encode(),
        )


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"message": message}}).encode()
    return status, {"Content-Type": ERROR_MIME}, body


def _str_field(obj: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    if key not in obj:
        return f"{where}.{key} is required" if required else None
    if not isinstance(obj[key], str) or (required and not obj[key]):
        return f"{where}.{key} must be a non-empty string"
    return None


def _scan_request_problem(body: Any, version: str) -> str | None:
    """Why ``body`` is not a ScanRequest of media type ``version``, or None."""
    if not isinstance(body, dict):
        return "scan request must be a JSON object"
    allowed = {"registry", "artifact"} | ({"enabled_capabilities"} if version == "1.1" else set())
    extra = sorted(set(body) - allowed)
    if extra:
        return f"unexpected fields {extra} for scan request version {version}"
    for key in ("registry", "artifact"):
        if not isinstance(body.get(key), dict):
            return f"{key} must be an object"
    registry, artifact = body["registry"], body["artifact"]
    if set(registry) - {"url", "authorization"}:
        return f"unexpected registry fields {sorted(set(registry) - {'url', 'authorization'})}"
    if set(artifact) - {"repository", "digest", "tag", "mime_type"}:
        return "unexpected artifact fields"
    problems = [
        _str_field(registry, "url", "registry"),
        _str_field(registry, "authorization", "registry", required=False),
        _str_field(artifact, "repository", "artifact"),
        _str_field(artifact, "digest", "artifact"),
        _str_field(artifact, "mime_type", "artifact"),
        _str_field(artifact, "tag", "artifact", required=False),
    ]
    url = registry.get("url")
    if isinstance(url, str) and url and not url.startswith(("http://", "https://")):
        problems.append("registry.url must be an http(s) URL")
    if "enabled_capabilities" in body:
        caps = body["enabled_capabilities"]
        if not isinstance(caps, list) or not all(
            isinstance(c, dict) and c.get("type") in ("vulnerability", "sbom") for c in caps
        ):
            problems.append("enabled_capabilities must be a list of {type: vulnerability|sbom}")
    return next((p for p in problems if p), None)


def _handler_for(double: HarborDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = RecordedRequest(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            status, headers, payload = double.handle(req)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
