"""The Harbor pluggable scanner adapter client against a spec-following double on loopback."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from service.scanner.errors import ScanError
from service.scanner.harbor import (
    SCAN_REQUEST_MIME_V1_0,
    SCAN_REQUEST_MIME_V1_1,
    HarborScannerClient,
    findings_from_report,
)
from tests.helpers.harbor_double import (
    DOCKER_MANIFEST,
    NATIVE_REPORT_MIME,
    OCI_MANIFEST,
    VULN_REPORT_MIME,
    HarborDouble,
)

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32
REGISTRY = "https://registry.example.test"
REGISTRY_AUTH = "Basic cm9ib3Q6c2VjcmV0"
ADAPTER_AUTH = "Bearer adapter-token"

VULNERABILITIES: list[dict[str, Any]] = [
    {
        "id": "CVE-2023-5678",
        "package": "libssl3",
        "version": "3.0.11-1~deb12u1",
        "fix_version": "3.0.11-1~deb12u2",
        "severity": "Medium",
        "description": "DH key generation is slow",
        "links": ["https://security-tracker.debian.org/tracker/CVE-2023-5678"],
        "cwe_ids": ["CWE-606"],
        "vendor_attributes": {"ecosystem": "Debian:12"},
        "layer": {"digest": "sha256:" + "11" * 32, "diff_id": "sha256:" + "22" * 32},
    },
    {
        "id": "GHSA-35jh-r3h4-6jhm",
        "package": "lodash",
        "version": "4.17.20",
        "fix_version": "4.17.21",
        "severity": "High",
        "description": "Command injection",
        "links": [
            "https://github.com/advisories/GHSA-35jh-r3h4-6jhm",
            "https://nvd.nist.gov/vuln/detail/CVE-2021-23337",
            "https://www.cve.org/CVERecord?id=cve-2021-23337",
        ],
        "cwe_ids": ["CWE-94"],
        "vendor_attributes": [{"key": "package_type", "value": "npm"}],  # the v1.1 yaml's form
    },
    {
        "id": "CVE-2011-3374",
        "package": "apt",
        "version": "2.6.1",
        "fix_version": "",
        "severity": "Negligible",
        "links": [],
    },
    {
        "id": "CVE-2099-0001",
        "package": "zlib1g",
        "version": "1:1.2.13.dfsg-1",
        "severity": "Critical",
    },
    {"id": "TEMP-0000000-ABCDEF", "package": "bash", "version": "5.2.15-2", "severity": "Unknown"},
]

EXPECTED_FINDINGS: list[dict[str, Any]] = [
    {
        "id": "CVE-2099-0001",
        "aliases": [],
        "package": "zlib1g",
        "ecosystem": "unknown",
        "installed_version": "1:1.2.13.dfsg-1",
        "fixed_version": None,
        "severity": "critical",
        "layer": None,
    },
    {
        "id": "GHSA-35jh-r3h4-6jhm",
        "aliases": ["CVE-2021-23337"],
        "package": "lodash",
        "ecosystem": "npm",
        "installed_version": "4.17.20",
        "fixed_version": "4.17.21",
        "severity": "high",
        "layer": None,
    },
    {
        "id": "CVE-2023-5678",
        "aliases": [],
        "package": "libssl3",
        "ecosystem": "Debian:12",
        "installed_version": "3.0.11-1~deb12u1",
        "fixed_version": "3.0.11-1~deb12u2",
        "severity": "medium",
        "layer": "sha256:" + "11" * 32,
    },
    {
        "id": "CVE-2011-3374",
        "aliases": [],
        "package": "apt",
        "ecosystem": "unknown",
        "installed_version": "2.6.1",
        "fixed_version": None,
        "severity": "low",
        "layer": None,
    },
    {
        "id": "TEMP-0000000-ABCDEF",
        "aliases": [],
        "package": "bash",
        "ecosystem": "unknown",
        "installed_version": "5.2.15-2",
        "fixed_version": None,
        "severity": "unknown",
        "layer": None,
    },
]


class SleepRecorder:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def double() -> Iterator[HarborDouble]:
    with HarborDouble(vulnerabilities=VULNERABILITIES, refresh_after=0) as d:
        yield d


def client_for(double: HarborDouble, **kwargs: Any) -> HarborScannerClient:
    kwargs.setdefault("sleep", SleepRecorder())
    return HarborScannerClient(double.url, auth_header=ADAPTER_AUTH, timeout=5, **kwargs)


def run_scan(client: HarborScannerClient, mime: str = OCI_MANIFEST) -> list[dict[str, Any]]:
    return client.scan(REGISTRY, REGISTRY_AUTH, "team/app", DIGEST, mime, tag="1.2.3")


# -- metadata ------------------------------------------------------------------------------
def test_metadata_is_parsed(double: HarborDouble) -> None:
    meta = client_for(double).metadata()
    assert meta["scanner"] == {"name": "Trivy", "vendor": "Aqua Security", "version": "0.50.0"}
    assert meta["capabilities"][0]["consumes_mime_types"] == [OCI_MANIFEST, DOCKER_MANIFEST]
    assert VULN_REPORT_MIME in meta["capabilities"][0]["produces_mime_types"]
    assert meta["properties"]["harbor.scanner-adapter/scanner-type"] == "os-package-vulnerability"
    (seen,) = double.seen("GET", "/api/v1/metadata")
    assert seen.headers["authorization"] == ADAPTER_AUTH
    assert "application/vnd.scanner.adapter.metadata+json" in seen.headers["accept"]


def test_base_url_with_api_prefix_is_accepted(double: HarborDouble) -> None:
    client = HarborScannerClient(double.url + "/api/v1/", sleep=SleepRecorder())
    assert client.metadata()["scanner"]["name"] == "Trivy"


@pytest.mark.parametrize(
    "meta",
    [
        [],
        {"capabilities": []},
        {"scanner": {}, "capabilities": {}},
        {"scanner": {}, "capabilities": [{"consumes_mime_types": [OCI_MANIFEST]}]},
    ],
)
def test_malformed_metadata_is_a_scan_error(meta: Any) -> None:
    class Bad(HarborDouble):
        def _metadata(self) -> tuple[int, dict[str, str], bytes]:
            return 200, {"Content-Type": "application/json"}, json.dumps(meta).encode()

    with Bad() as d, pytest.raises(ScanError, match="metadata"):
        client_for(d).metadata()


# -- the whole exchange --------------------------------------------------------------------
def test_scan_submits_polls_and_converts_to_exact_findings() -> None:
    with HarborDouble(vulnerabilities=VULNERABILITIES, pending_polls=2, refresh_after=0) as d:
        assert run_scan(client_for(d)) == EXPECTED_FINDINGS

        (post,) = d.seen("POST", "/api/v1/scan")
        # the double advertises a v1.2 capability (with "type"): request version 1.1
        assert post.headers["content-type"] == SCAN_REQUEST_MIME_V1_1
        assert post.headers["authorization"] == ADAPTER_AUTH
        assert post.json() == {
            "registry": {"url": REGISTRY, "authorization": REGISTRY_AUTH},
            "artifact": {
                "repository": "team/app",
                "digest": DIGEST,
                "mime_type": OCI_MANIFEST,
                "tag": "1.2.3",
            },
            "enabled_capabilities": [
                {"type": "vulnerability", "produces_mime_types": [VULN_REPORT_MIME]}
            ],
        }
        polls = d.seen("GET", "/api/v1/scan/")
        assert len(polls) == 3
        assert {p.headers["accept"] for p in polls} == {VULN_REPORT_MIME}


def test_v1_1_adapter_gets_a_v1_0_request_and_native_report_type() -> None:
    caps = [
        {
            "consumes_mime_types": [DOCKER_MANIFEST],
            "produces_mime_types": [NATIVE_REPORT_MIME],
        }
    ]
    with HarborDouble(vulnerabilities=VULNERABILITIES[:1], capabilities=caps) as d:
        assert run_scan(client_for(d), DOCKER_MANIFEST) == [EXPECTED_FINDINGS[2]]
        (post,) = d.seen("POST", "/api/v1/scan")
        assert post.headers["content-type"] == SCAN_REQUEST_MIME_V1_0
        assert "enabled_capabilities" not in post.json()
        (poll,) = d.seen("GET", "/api/v1/scan/")
        assert poll.headers["accept"] == NATIVE_REPORT_MIME


def test_submit_without_registry_authorization_or_tag(double: HarborDouble) -> None:
    client = client_for(double)
    scan_id = client.submit(REGISTRY, None, "team/app", DIGEST, OCI_MANIFEST)
    (post,) = double.seen("POST", "/api/v1/scan")
    assert post.json() == {
        "registry": {"url": REGISTRY},
        "artifact": {"repository": "team/app", "digest": DIGEST, "mime_type": OCI_MANIFEST},
    }
    assert client.report(scan_id)["artifact"]["digest"] == DIGEST


HARBOR_TO_TAGWARDEN = [
    ("Critical", "critical"),
    ("High", "high"),
    ("Medium", "medium"),
    ("Low", "low"),
    ("Negligible", "low"),
    ("Unknown", "unknown"),
]


@pytest.mark.parametrize(("harbor", "tagwarden"), HARBOR_TO_TAGWARDEN)
def test_severity_mapping(harbor: str, tagwarden: str) -> None:
    vuln = {"id": "CVE-2024-0001", "package": "p", "version": "1", "severity": harbor}
    with HarborDouble(vulnerabilities=[vuln]) as d:
        (finding,) = run_scan(client_for(d))
    assert finding["severity"] == tagwarden


def test_clean_report_without_vulnerabilities_key_has_no_findings() -> None:
    # harbor-scanner-trivy omits an empty "vulnerabilities" (json omitempty)
    assert findings_from_report({"generated_at": "2026-01-01T00:00:00Z"}) == []


# -- polling -------------------------------------------------------------------------------
def test_refresh_after_is_honoured() -> None:
    sleep = SleepRecorder()
    with HarborDouble(vulnerabilities=VULNERABILITIES, pending_polls=3, refresh_after=2) as d:
        assert run_scan(client_for(d, sleep=sleep)) == EXPECTED_FINDINGS
        assert len(d.seen("GET", "/api/v1/scan/")) == 4
    assert sleep.calls == [2, 2, 2]


@pytest.mark.parametrize(("header", "expected"), [(None, 5), ("soon", 5), ("-3", 0)])
def test_missing_or_bad_refresh_after_falls_back(header: str | None, expected: float) -> None:
    sleep = SleepRecorder()
    with HarborDouble(pending_polls=1, refresh_after=header) as d:
        assert run_scan(client_for(d, sleep=sleep)) == []
    assert sleep.calls == [expected]


def test_poll_limit_is_a_scan_error() -> None:
    sleep = SleepRecorder()
    with HarborDouble(pending_polls=1000, refresh_after=1) as d:
        client = client_for(d, sleep=sleep, poll_limit_seconds=3)
        with pytest.raises(ScanError, match=r"not ready after 4 polls .*poll limit 3s"):
            run_scan(client)
        assert len(d.seen("GET", "/api/v1/scan/")) == 4
    assert sleep.calls == [1, 1, 1]


def test_unknown_scan_id_is_a_scan_error(double: HarborDouble) -> None:
    with pytest.raises(ScanError, match="no scan request 'nope'"):
        client_for(double).report("nope")


# -- adapter errors ------------------------------------------------------------------------
def test_adapter_500_on_report_surfaces_its_message() -> None:
    failures = {"report": (500, "trivy: failed to pull image: unauthorized")}
    with HarborDouble(failures=failures, pending_polls=1, refresh_after=0) as d:
        with pytest.raises(ScanError, match="500 .*trivy: failed to pull image: unauthorized"):
            run_scan(client_for(d))


@pytest.mark.parametrize("operation", ["metadata", "scan"])
def test_adapter_errors_on_other_operations_surface_their_message(operation: str) -> None:
    with HarborDouble(failures={operation: (503, "database is updating")}) as d:
        with pytest.raises(ScanError, match="503 .*database is updating"):
            run_scan(client_for(d))


def test_unreachable_adapter_is_a_scan_error() -> None:
    with HarborDouble() as d:
        url = d.url
    client = HarborScannerClient(url, timeout=2, sleep=SleepRecorder())
    with pytest.raises(ScanError, match="GET /metadata failed"):
        client.metadata()


def test_adapter_rejection_of_a_bad_digest_surfaces(double: HarborDouble) -> None:
    with pytest.raises(ScanError, match="422 .*invalid artifact.digest"):
        client_for(double).submit(REGISTRY, None, "team/app", "not a digest", OCI_MANIFEST)


# -- capability mismatch -------------------------------------------------------------------
def test_artifact_type_not_consumed_is_a_scan_error() -> None:
    caps = [{"consumes_mime_types": [DOCKER_MANIFEST], "produces_mime_types": [VULN_REPORT_MIME]}]
    with HarborDouble(capabilities=caps) as d:
        with pytest.raises(ScanError, match="does not consume " + re.escape(OCI_MANIFEST)):
            run_scan(client_for(d))
        assert d.seen("POST") == []


def test_no_vulnerability_report_produced_is_a_scan_error() -> None:
    caps = [
        {
            "type": "vulnerability",
            "consumes_mime_types": [OCI_MANIFEST],
            "produces_mime_types": ["application/vnd.scanner.adapter.vuln.report.raw"],
        },
        {
            "type": "sbom",
            "consumes_mime_types": [OCI_MANIFEST],
            "produces_mime_types": ["application/vnd.security.sbom.report+json; version=1.0"],
        },
    ]
    with HarborDouble(capabilities=caps) as d:
        with pytest.raises(ScanError, match="does not produce a vulnerability report"):
            run_scan(client_for(d))
        assert d.seen("POST") == []


def test_sbom_only_capability_does_not_count_as_consuming() -> None:
    caps = [
        {
            "type": "sbom",
            "consumes_mime_types": [OCI_MANIFEST],
            "produces_mime_types": [VULN_REPORT_MIME],
        }
    ]
    with HarborDouble(capabilities=caps) as d:
        with pytest.raises(ScanError, match="does not consume"):
            run_scan(client_for(d))


def test_media_type_comparison_ignores_spacing_and_case() -> None:
    caps = [
        {
            "consumes_mime_types": [OCI_MANIFEST],
            "produces_mime_types": ["Application/vnd.security.vulnerability.report;version=1.1"],
        }
    ]
    with HarborDouble(vulnerabilities=VULNERABILITIES[:1], capabilities=caps) as d:
        assert run_scan(client_for(d)) == [EXPECTED_FINDINGS[2]]


# -- malformed reports ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html>oops</html>", "malformed JSON"),
        (b'{"vulnerabilities": ', "malformed JSON"),
        (b"[]", "not a JSON object"),
        (b'{"vulnerabilities": {"id": "x"}}', "not a list"),
        (b'{"vulnerabilities": ["CVE-1"]}', "not an object"),
        (b'{"vulnerabilities": [{"package": "p"}]}', "has no id"),
        (b'{"vulnerabilities": [{"id": "CVE-1", "package": ""}]}', "has no package"),
        (b'{"vulnerabilities": [{"id": "C", "package": "p", "severity": "Severe"}]}', "severity"),
        (b'{"vulnerabilities": [{"id": "C", "package": "p", "version": 3}]}', "bad version"),
        (b'{"vulnerabilities": [{"id": "C", "package": "p", "links": "x"}]}', "bad links"),
    ],
)
def test_malformed_report_is_a_scan_error(body: bytes, match: str) -> None:
    with HarborDouble(report_body=body) as d:
        with pytest.raises(ScanError, match=match):
            run_scan(client_for(d))


def test_report_about_another_digest_is_a_scan_error() -> None:
    other = {"artifact": {"repository": "team/app", "digest": "sha256:" + "cd" * 32}}
    with HarborDouble(report_body=json.dumps(other).encode()) as d:
        with pytest.raises(ScanError, match="reported on sha256:cdcd"):
            run_scan(client_for(d))


# -- the double itself follows the spec strictly -------------------------------------------
def _post(double: HarborDouble, body: Any, content_type: str) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with requests.Session() as s:
        return s.post(
            double.url + "/api/v1/scan", data=data, headers={"Content-Type": content_type}
        )


GOOD_REQUEST = {
    "registry": {"url": REGISTRY},
    "artifact": {"repository": "team/app", "digest": DIGEST, "mime_type": OCI_MANIFEST},
}


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (GOOD_REQUEST, "application/json", 400),
        (b"{not json", SCAN_REQUEST_MIME_V1_0, 400),
        ({"registry": {"url": REGISTRY}}, SCAN_REQUEST_MIME_V1_0, 400),
        ({**GOOD_REQUEST, "extra": 1}, SCAN_REQUEST_MIME_V1_0, 400),
        ({**GOOD_REQUEST, "enabled_capabilities": []}, SCAN_REQUEST_MIME_V1_0, 400),
        ({**GOOD_REQUEST, "registry": {"url": 5}}, SCAN_REQUEST_MIME_V1_0, 400),
        ({**GOOD_REQUEST, "registry": {"url": "ftp://x"}}, SCAN_REQUEST_MIME_V1_0, 400),
        (
            {**GOOD_REQUEST, "artifact": {**GOOD_REQUEST["artifact"], "digest": "x"}},
            SCAN_REQUEST_MIME_V1_0,
            422,
        ),
        (
            {**GOOD_REQUEST, "artifact": {**GOOD_REQUEST["artifact"], "mime_type": "text/plain"}},
            SCAN_REQUEST_MIME_V1_0,
            501,
        ),
        (GOOD_REQUEST, SCAN_REQUEST_MIME_V1_0, 202),
        ({**GOOD_REQUEST, "enabled_capabilities": []}, SCAN_REQUEST_MIME_V1_1, 202),
    ],
)
def test_double_validates_scan_requests(
    double: HarborDouble, body: Any, content_type: str, status: int
) -> None:
    resp = _post(double, body, content_type)
    assert resp.status_code == status
    if status >= 400:
        assert resp.headers["Content-Type"].startswith("application/vnd.scanner.adapter.error+json")
        assert isinstance(resp.json()["error"]["message"], str)
    else:
        assert set(resp.json()) == {"id"}
