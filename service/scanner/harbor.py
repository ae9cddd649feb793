"""Client for Harbor's pluggable scanner adapter API (v1.1 / v1.2), so Trivy or Clair can scan.

The API (goharbor/pluggable-scanner-spec, api/spec/scanner-adapter-openapi-v1.1.yaml and v1.2):

- ``GET  /api/v1/metadata`` -> ``ScannerAdapterMetadata``: ``scanner`` {name, vendor, version},
  ``capabilities`` [{``type``? (v1.2: vulnerability|sbom, absent means vulnerability),
  ``consumes_mime_types``, ``produces_mime_types``}], ``properties`` {str: str}.
- ``POST /api/v1/scan`` with a ``ScanRequest`` {``registry``: {url, authorization?},
  ``artifact``: {repository, digest, tag?, mime_type}, ``enabled_capabilities``? (v1.2)}
  -> 202 {``id``}; 400 invalid JSON, 422 invalid field, 500, 501 (v1.2) no capability.
- ``GET  /api/v1/scan/{id}/report`` with ``Accept: <report media type>`` -> 302 +
  ``Refresh-After: <seconds>`` while the report is being generated, 200 with the
  ``HarborVulnerabilityReport``, 404 for an unknown id, 500 with an error envelope.
- Errors come as ``{"error": {"message": ...}}`` (``application/vnd.scanner.adapter.error+json;
  version=1.0``).

`HarborScannerClient.scan` runs the whole exchange and returns findings in API.md's shape.
Every failure (transport, HTTP status, malformed body, capability mismatch, poll limit) is a
`ScanError`, which fails the scan with a readable ``error``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates

from service.domain.schemas.base import flatten_errors
from service.scanner.errors import ScanError

API_PREFIX = "/api/v1"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ARTIFACT_MIME_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)

METADATA_MIME_V1_0 = "application/vnd.scanner.adapter.metadata+json; version=1.0"
METADATA_MIME_V1_1 = "application/vnd.scanner.adapter.metadata+json; version=1.1"
SCAN_REQUEST_MIME_V1_0 = "application/vnd.scanner.adapter.scan.request+json; version=1.0"
SCAN_REQUEST_MIME_V1_1 = "application/vnd.scanner.adapter.scan.request+json; version=1.1"
SCAN_RESPONSE_MIME = "application/vnd.scanner.adapter.scan.response+json; version=1.0"
ERROR_MIME = "application/vnd.scanner.adapter.error+json; version=1.0"
# Both carry the HarborVulnerabilityReport schema; the first is preferred.
VULN_REPORT_MIME = "application/vnd.security.vulnerability.report; version=1.1"
NATIVE_REPORT_MIME = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"
REPORT_MIME_TYPES = (VULN_REPORT_MIME, NATIVE_REPORT_MIME)

# What Harbor core waits when a 302 carries no usable Refresh-After (src/pkg/scan/rest/v1).
DEFAULT_REFRESH_AFTER = 5

SEVERITY_MAP: dict[str, str] = {
    "Critical": "critical",
    "High": "high",
    "Medium": "medium",
    "Low": "low",
    "Negligible": "low",
    "Unknown": "unknown",
}
_SEVERITY_BY_LOWER = {k.lower(): v for k, v in SEVERITY_MAP.items()}
_SEVERITY_RANK = {s: i for i, s in enumerate(("critical", "high", "medium", "low", "unknown"))}
# Not in the spec: adapters that name the package's ecosystem do it in vendor_attributes.
ECOSYSTEM_ATTRIBUTES = ("ecosystem", "package_type", "pkg_type")
_CVE = re.compile(r"CVE-\d{4}-\d{4,}", re.IGNORECASE)


def normalize_mime(value: str) -> str:
    """``type/subtype; k=v`` with case and whitespace normalised, for comparing media types."""
    parts = [p.strip() for p in value.split(";")]
    head = parts[0].lower()
    params = []
    for p in parts[1:]:
        if not p:
            continue
        key, _, val = p.partition("=")
        params.append(f"{key.strip().lower()}={val.strip().strip(chr(34))}")
    return "; ".join([head, *params])


def _mime_in(value: str, candidates: list[str]) -> bool:
    want = normalize_mime(value)
    return any(normalize_mime(c) == want for c in candidates)


class HarborScannerClient:
    """One scanner adapter, reached at ``base_url`` (its root; ``/api/v1`` is appended)."""

    def __init__(
        self,
        base_url: str,
        *,
        auth_header: str | None = None,
        timeout: float = 30,
        poll_limit_seconds: float = 600,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        root = base_url.rstrip("/")
        if root.endswith(API_PREFIX):
            root = root[: -len(API_PREFIX)]
        self.base_url = root
        self.auth_header = auth_header
        self.timeout = timeout
        self.poll_limit_seconds = poll_limit_seconds
        self.sleep = sleep

    # -- HTTP ------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
    ) -> requests.Response:
        all_headers = dict(headers)
        if self.auth_header:
            all_headers["Authorization"] = self.auth_header
        try:
            return requests.request(
                method,
                self._url(path),
                headers=all_headers,
                data=body,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise ScanError(f"scanner adapter {method} {path} failed: {exc}") from exc

    @staticmethod
    def _error(resp: requests.Response, what: str) -> ScanError:
        """A ScanError carrying the adapter's own message when its error envelope has one."""
        message = _error_message(resp.content)
        text = f"scanner adapter answered {resp.status_code} to {what}"
        return ScanError(f"{text}: {message}" if message else text)

    @staticmethod
    def _json(resp: requests.Response, what: str) -> Any:
        try:
            return json.loads(resp.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScanError(f"scanner adapter sent malformed JSON for {what}: {exc}") from exc

    # -- operations ------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """``GET /api/v1/metadata``, checked for the spec's required shape."""
        resp = self._request(
            "GET", "/metadata", headers={"Accept": f"{METADATA_MIME_V1_1}, {METADATA_MIME_V1_0}"}
        )
        if resp.status_code != 200:
            raise self._error(resp, "GET /metadata")
        meta = self._json(resp, "metadata")
        _check_metadata(meta)
        return meta

    def submit(
        self,
        registry_url: str,
        registry_authorization: str | None,
        repository: str,
        digest: str,
        mime_type: str,
        tag: str | None = None,
        *,
        enabled_capabilities: list[dict[str, Any]] | None = None,
    ) -> str:
        """``POST /api/v1/scan``; returns the scan request id.

        ``enabled_capabilities`` (v1.2) switches the request to media type version 1.1.
        """
        registry: dict[str, str] = {"url": registry_url}
        if registry_authorization:
            registry["authorization"] = registry_authorization
        artifact: dict[str, str] = {
            "repository": repository,
            "digest": digest,
            "mime_type": mime_type,
        }
        if tag is not None:
            artifact["tag"] = tag
        payload: dict[str, Any] = {"registry": registry, "artifact": artifact}
        content_type = SCAN_REQUEST_MIME_V1_0
        if enabled_capabilities is not None:
            payload["enabled_capabilities"] = enabled_capabilities
            content_type = SCAN_REQUEST_MIME_V1_1
        resp = self._request(
            "POST",
            "/scan",
            headers={"Content-Type": content_type, "Accept": SCAN_RESPONSE_MIME},
            body=json.dumps(payload).encode(),
        )
        if resp.status_code != 202:
            raise self._error(resp, f"POST /scan for {repository}@{digest}")
        answer = self._json(resp, "the scan response")
        scan_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(scan_id, str) or not scan_id:
            raise ScanError(f"scanner adapter's scan response has no string id: {answer!r:.200}")
        return scan_id

    def report(self, scan_id: str, *, mime_type: str = VULN_REPORT_MIME) -> dict[str, Any]:
        """``GET /api/v1/scan/{id}/report`` until 200, waiting ``Refresh-After`` between polls.

        Gives up with a ScanError once waiting again would pass ``poll_limit_seconds``
        (counting the larger of the time slept and the wall time spent).
        """
        path = f"/scan/{scan_id}/report"
        started = time.monotonic()
        slept = 0.0
        polls = 0
        while True:
            resp = self._request("GET", path, headers={"Accept": mime_type})
            polls += 1
            if resp.status_code == 200:
                report = self._json(resp, f"the report of scan {scan_id}")
                _check_report(report)
                return report
            if resp.status_code == 302:
                delay = _refresh_after(resp.headers.get("Refresh-After"))
                spent = max(slept, time.monotonic() - started)
                if spent + delay > self.poll_limit_seconds:
                    raise ScanError(
                        f"report of scan {scan_id} not ready after {polls} polls and "
                        f"{spent:.0f}s (poll limit {self.poll_limit_seconds}s)"
                    )
                self.sleep(delay)
                slept += delay
                continue
            if resp.status_code == 404:
                raise ScanError(f"scanner adapter knows no scan request {scan_id!r} (404)")
            raise self._error(resp, f"GET {path}")

    def scan(
        self,
        registry_url: str,
        registry_authorization: str | None,
        repository: str,
        digest: str,
        mime_type: str,
        tag: str | None = None,
    ) -> list[dict[str, Any]]:
        """Metadata check, submit, poll, convert: the findings for one image manifest."""
        meta = self.metadata()
        capability, report_mime = select_capability(meta, mime_type)
        enabled = None
        if "type" in capability:  # a v1.2 adapter: ask for the vulnerability report only
            enabled = [{"type": "vulnerability", "produces_mime_types": [report_mime]}]
        scan_id = self.submit(
            registry_url,
            registry_authorization,
            repository,
            digest,
            mime_type,
            tag,
            enabled_capabilities=enabled,
        )
        report = self.report(scan_id, mime_type=report_mime)
        reported = report.get("artifact")
        if isinstance(reported, dict) and reported.get("digest") not in (None, "", digest):
            raise ScanError(
                f"scanner adapter reported on {reported.get('digest')}, asked for {digest}"
            )
        return findings_from_report(report)


# -- validation and conversion ---------------------------------------------------------------
def select_capability(meta: Mapping[str, Any], mime_type: str) -> tuple[dict[str, Any], str]:
    """The vulnerability capability consuming ``mime_type`` and the report type to ask for."""
    scanner = meta.get("scanner") or {}
    name = f"{scanner.get('name', '?')} {scanner.get('version', '')}".strip()
    vuln_caps = [
        c for c in meta.get("capabilities", []) if c.get("type", "vulnerability") == "vulnerability"
    ]
    consuming = [c for c in vuln_caps if _mime_in(mime_type, c["consumes_mime_types"])]
    if not consuming:
        offered = sorted({m for c in vuln_caps for m in c["consumes_mime_types"]})
        raise ScanError(
            f"scanner {name} does not consume {mime_type} (its vulnerability capabilities "
            f"consume {offered or 'nothing'})"
        )
    for report_mime in REPORT_MIME_TYPES:
        for cap in consuming:
            if _mime_in(report_mime, cap["produces_mime_types"]):
                return cap, report_mime
    produced = sorted({m for c in consuming for m in c["produces_mime_types"]})
    raise ScanError(
        f"scanner {name} does not produce a vulnerability report ({VULN_REPORT_MIME} or "
        f"{NATIVE_REPORT_MIME}) for {mime_type}; it produces {produced}"
    )


def findings_from_report(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A HarborVulnerabilityReport as findings in API.md's shape, most severe first."""
    _check_report(report)
    findings = [_finding(v) for v in report.get("vulnerabilities") or []]
    findings.sort(key=lambda f: (_SEVERITY_RANK[f["severity"]], f["id"], f["package"]))
    return findings


def map_severity(value: Any) -> str:
    """The spec's Severity enum to Tagwarden's scale (Negligible -> low); missing -> unknown."""
    if value is None or value == "":
        return "unknown"
    if isinstance(value, str) and value.lower() in _SEVERITY_BY_LOWER:
        return _SEVERITY_BY_LOWER[value.lower()]
    raise ScanError(f"scanner adapter report has an unknown severity {value!r}")


def _finding(vuln: Mapping[str, Any]) -> dict[str, Any]:
    vid = vuln["id"]
    aliases: list[str] = []
    for link in vuln.get("links") or []:
        for match in _CVE.findall(link):
            cve = match.upper()
            if cve != vid.upper() and cve not in aliases:
                aliases.append(cve)
    layer = vuln.get("layer")  # not in the spec; harbor-scanner-trivy sends {"digest", "diff_id"}
    layer_digest = layer.get("digest") if isinstance(layer, dict) else None
    return {
        "id": vid,
        "aliases": aliases,
        "package": vuln["package"],
        "ecosystem": _ecosystem(vuln.get("vendor_attributes")),
        "installed_version": vuln.get("version") or None,
        "fixed_version": vuln.get("fix_version") or None,
        "severity": map_severity(vuln.get("severity")),
        "layer": layer_digest if isinstance(layer_digest, str) and layer_digest else None,
    }


def _vendor_attributes(raw: Any) -> dict[str, Any]:
    """v1.2 (and Harbor, Trivy): an object. The v1.1 yaml: a list of {key, value}."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, list):
        return {
            a["key"]: a.get("value")
            for a in raw
            if isinstance(a, dict) and isinstance(a.get("key"), str)
        }
    return {}


def _ecosystem(raw: Any) -> str:
    attrs = _vendor_attributes(raw)
    for key in ECOSYSTEM_ATTRIBUTES:
        value = attrs.get(key)
        if isinstance(value, str) and value:
            return value
    return "unknown"


def _refresh_after(value: str | None) -> float:
    """Seconds from a Refresh-After header (an integer per the spec); default when unusable."""
    if value is None:
        return DEFAULT_REFRESH_AFTER
    try:
        seconds = int(value.strip())
    except ValueError:
        return DEFAULT_REFRESH_AFTER
    return max(seconds, 0)


def _error_message(body: bytes) -> str:
    """``error.message`` from the adapter's error envelope, else the start of the body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
    return body[:200].decode("utf-8", "replace").strip()


class _Capability(Schema):
    class Meta:
        unknown = INCLUDE

    consumes_mime_types = fields.List(fields.String(), required=True)
    produces_mime_types = fields.List(fields.String(), required=True)


class MetadataSchema(Schema):
    """The adapter's `/metadata` answer, as far as the client reads it."""

    class Meta:
        unknown = INCLUDE

    error_messages = {"type": "is not a JSON object"}  # noqa: RUF012 - marshmallow's API
    scanner = fields.Dict(required=True, error_messages={"required": "has no scanner object"})
    capabilities = fields.List(fields.Nested(_Capability), required=True,
                               error_messages={"required": "has no capabilities list"})
    properties = fields.Dict(allow_none=True)


class _Vulnerability(Schema):
    class Meta:
        unknown = INCLUDE

    error_messages = {"type": "is not an object"}  # noqa: RUF012 - marshmallow's API
    id = fields.String(required=True, validate=validate.Length(min=1, error="has no id"),
                       error_messages={"required": "has no id", "invalid": "has no id",
                                       "null": "has no id"})
    package = fields.String(required=True,
                            validate=validate.Length(min=1, error="has no package"),
                            error_messages={"required": "has no package",
                                            "invalid": "has no package",
                                            "null": "has no package"})
    version = fields.String(allow_none=True, error_messages={"invalid": "has a bad version"})
    fix_version = fields.String(allow_none=True,
                                error_messages={"invalid": "has a bad fix_version"})
    links = fields.List(fields.String(error_messages={"invalid": "has bad links"}),
                        allow_none=True, error_messages={"invalid": "has bad links"})
    severity = fields.Raw(allow_none=True)

    @validates("severity")
    def _severity(self, value: Any, **_: Any) -> None:
        try:
            map_severity(value)
        except ScanError as exc:
            raise ValidationError(str(exc)) from None


class ReportSchema(Schema):
    """A HarborVulnerabilityReport, as far as findings are built from it (harbor-scanner-trivy
    omits an empty vulnerabilities list)."""

    class Meta:
        unknown = INCLUDE

    error_messages = {"type": "is not a JSON object"}  # noqa: RUF012 - marshmallow's API
    vulnerabilities = fields.List(
        fields.Nested(_Vulnerability),
        allow_none=True, error_messages={"invalid": "is not a list"})


_METADATA = MetadataSchema()
_REPORT = ReportSchema()


def _checked(schema: Schema, document: Any, what: str) -> None:
    """ScanError naming every problem of the adapter's document (fields as dotted paths)."""
    errors = schema.validate(document) if isinstance(document, Mapping) else {
        "_schema": ["is not a JSON object"]}
    if errors:
        problems = "; ".join(f"{path}: {', '.join(messages)}" if path != "_schema"
                             else ", ".join(messages)
                             for path, messages in flatten_errors(errors).items())
        raise ScanError(f"scanner adapter {what} {problems}"[:500])


def _check_metadata(meta: Any) -> None:
    _checked(_METADATA, meta, "metadata")


def _check_report(report: Any) -> None:
    _checked(_REPORT, report, "report")
