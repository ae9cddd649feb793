"""Scans with the real worker: exact findings, whiteouts, platforms, SBOM, promotion gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import oci
from testkit import scan_fixtures as fixtures
from tests.integration.conftest import Stack
from tests.integration.test_webhooks import wait_for

POLICY = {
    "name": "scanned",
    "repositories": ["scanned/*"],
    "promotion": {
        "develop": {}, "staging": {"from": "develop"},
        "production": {"from": "staging",
                       "scan": {"required": True, "max_severity": "medium"}},
    },
    "scan_on_push": False,
}


def _key(f: dict) -> tuple:
    return (f["id"], f["package"], f["installed_version"], f["fixed_version"], f["severity"],
            f["layer"], f.get("platform"))


@pytest.fixture(scope="module")
def vulndb(stack: Stack, tmp_path_factory) -> dict:
    """The OSV fixture imported with the real CLI into the stack's Redis."""
    assert stack.admin().put(f"{stack.gw_url}/api/v1/policies/scanned", json=POLICY,
                             timeout=10).status_code == 200
    directory = fixtures.write_osv_dir(tmp_path_factory.mktemp("osv"),
                                       fixtures.osv_fixture_records())
    tagwarden = str(Path(sys.executable).parent / "tagwarden")
    done = subprocess.run([tagwarden, "vulndb", "import", str(directory), "--json"],
                          env=stack.cli_env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["records"] == len(fixtures.osv_fixture_records())
    info = stack.admin().get(f"{stack.gw_url}/api/v1/vulndb", timeout=10).json()
    assert info["records"] == report["records"] and info["loaded_at"]
    return info


def push_layout(stack: Stack, tmp_path: Path, images, dest: str, all_: bool = False) -> None:
    layout = oci.write_layout(tmp_path / dest.replace("/", "_").replace(":", "_"),
                              {"img": images})
    # --preserve-digests: skopeo would otherwise gzip the uncompressed layer on the way
    done = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{dest}",
                           all_platforms=all_, extra=["--preserve-digests"])
    assert done.returncode == 0, done.stderr


def scan(stack: Stack, repository: str, reference: str) -> dict:
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/scans",
                              json={"repository": repository, "reference": reference},
                              timeout=10)
    assert resp.status_code == 202, resp.text
    scan_id = resp.json()["id"]

    def finished():
        body = stack.admin().get(f"{stack.gw_url}/api/v1/scans/{scan_id}", timeout=10).json()
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_for(finished, timeout=60)


def test_scan_finds_exactly_the_expected_findings(stack: Stack, vulndb, tmp_path: Path):
    image = oci.Image(layers=fixtures.vulnerable_image_layers())
    push_layout(stack, tmp_path, image, "scanned/app:v1.0.0")
    result = scan(stack, "scanned/app", "v1.0.0")
    assert result["status"] == "succeeded", result.get("error")
    assert result["digest"] == image.digest
    assert sorted(map(_key, result["findings"])) == sorted(map(_key, fixtures.EXPECTED_FINDINGS))
    names = {f["package"] for f in result["findings"]}
    assert "requests" not in names  # removed by a whiteout in a later layer
    assert "zlib1g" not in names  # the fixed version is installed
    assert result["summary"] == {"critical": 0, "high": 1, "medium": 2, "low": 0, "unknown": 0}
    assert result["vulndb"]["version"] == vulndb["version"]
    sbom = stack.admin().get(f"{stack.gw_url}/api/v1/scans/{result['id']}/sbom", timeout=10)
    assert sbom.status_code == 200
    assert sbom.headers["Content-Type"].startswith("application/vnd.cyclonedx+json")
    document = sbom.json()
    assert document["bomFormat"] == "CycloneDX"
    purls = {c.get("purl") for c in document["components"]}
    assert fixtures.EXPECTED_PURLS <= purls
    from service.scanner.sbom import validation_errors

    assert validation_errors(document) is None


def test_two_platform_index_is_scanned_per_platform(stack: Stack, vulndb, tmp_path: Path):
    debian = oci.Image(layers=fixtures.vulnerable_image_layers(), architecture="amd64")
    alpine = oci.Image(layers=fixtures.alpine_image_layers(), architecture="arm64")
    push_layout(stack, tmp_path, [debian, alpine], "scanned/multi:v1.0.0", all_=True)
    result = scan(stack, "scanned/multi", "v1.0.0")
    assert result["status"] == "succeeded", result.get("error")
    assert result["digest"] == oci.index_digest([debian, alpine])
    expected = [{**f, "platform": "linux/amd64"} for f in fixtures.EXPECTED_FINDINGS] + [
        {**f, "platform": "linux/arm64"} for f in fixtures.ALPINE_EXPECTED_FINDINGS]
    assert sorted(map(_key, result["findings"])) == sorted(map(_key, expected))
    assert {p["platform"] for p in result["platforms"]} == {"linux/amd64", "linux/arm64"}


def test_duplicate_requests_share_one_scan_and_bad_input_fails_cleanly(stack: Stack, vulndb,
                                                                        tmp_path: Path):
    image = oci.Image(layers=[oci.tar_layer({"etc/os-release": fixtures.DEBIAN_OS_RELEASE})])
    push_layout(stack, tmp_path, image, "scanned/dup:v1.0.0")
    # on a queue no worker serves, so the first scan is certainly still queued
    from service.config import Settings
    from service.core.scans import request_scan
    from service.services import Services

    idle = Services.build(Settings.from_mapping({
        "redis_url": stack.env["TAGWARDEN_REDIS_URL"],
        "registry_url": stack.env["TAGWARDEN_REGISTRY_URL"], "queue_name": "nobody"}))
    first, created = request_scan(idle, "scanned/dup", image.digest, "test")
    second, again = request_scan(idle, "scanned/dup", image.digest, "test")
    assert (created, again, second["id"]) == (True, False, first["id"])
    assert idle.queue.count == 1
    idle.queue.empty()
    idle.scans.release(image.digest, first["id"])
    missing = stack.admin().post(f"{stack.gw_url}/api/v1/scans", json={
        "repository": "scanned/dup", "reference": "v9.9.9"}, timeout=10)
    assert missing.status_code == 404
    # a layer that is not a tar: the scan fails with a reason, the worker goes on
    junk = oci.Layer(data=b"not a tar at all" * 100, media_type=oci.OCI_LAYER,
                     digest=oci.sha256_digest(b"not a tar at all" * 100),
                     diff_id=oci.sha256_digest(b"not a tar at all" * 100), size=1600)
    push_layout(stack, tmp_path, oci.Image(layers=[junk]), "scanned/junk:v1.0.0")
    failed = scan(stack, "scanned/junk", "v1.0.0")
    assert failed["status"] == "failed"
    assert "tar" in failed["error"].lower()
    ok = scan(stack, "scanned/dup", "v1.0.0")
    assert ok["status"] == "succeeded"


def test_promotion_obeys_scan_verdict_and_ignore_list(stack: Stack, vulndb, tmp_path: Path):
    image = oci.Image(layers=fixtures.vulnerable_image_layers(),
                      labels={"purpose": "gate"})
    push_layout(stack, tmp_path, image, "scanned/gate:v1.0.0")
    for env, src in (("develop", {"tag": "v1.0.0"}), ("staging", {"from_environment": "develop"})):
        assert stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json={
            "repository": "scanned/gate", "environment": env, **src},
            timeout=10).status_code == 201
    body = {"repository": "scanned/gate", "environment": "production",
            "from_environment": "staging"}
    unscanned = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body, timeout=10)
    assert unscanned.status_code == 403
    assert [v["rule"] for v in unscanned.json()["violations"]] == ["promotion.scan_required"]
    assert scan(stack, "scanned/gate", "v1.0.0")["status"] == "succeeded"
    severe = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body, timeout=10)
    assert severe.status_code == 403
    violation = severe.json()["violations"][0]
    assert violation["rule"] == "promotion.severity"
    assert "GHSA-35jh-r3h4-6jhm" in violation["message"]
    accepted = json.loads(json.dumps(POLICY))
    accepted["promotion"]["production"]["scan"]["ignore"] = [{
        "id": "CVE-2021-23337", "until": "2099-01-01T00:00:00Z", "reason": "not reachable"}]
    assert stack.admin().put(f"{stack.gw_url}/api/v1/policies/scanned", json=accepted,
                             timeout=10).status_code == 200
    try:
        allowed = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body, timeout=10)
        assert allowed.status_code == 201, allowed.text
    finally:
        stack.admin().put(f"{stack.gw_url}/api/v1/policies/scanned", json=POLICY, timeout=10)


def test_scan_on_push_enqueues_a_scan(stack: Stack, vulndb, tmp_path: Path):
    policy = {**POLICY, "name": "scan-on-push", "repositories": ["onpush/*"],
              "scan_on_push": True}
    assert stack.admin().put(f"{stack.gw_url}/api/v1/policies/scan-on-push", json=policy,
                             timeout=10).status_code == 200
    image = oci.Image(layers=fixtures.alpine_image_layers())
    push_layout(stack, tmp_path, image, "onpush/app:v1.0.0")
    found = wait_for(lambda: [s for s in stack.admin().get(
        f"{stack.gw_url}/api/v1/scans", params={"repository": "onpush/app"}, timeout=10
    ).json()["items"] if s["status"] == "succeeded"], timeout=60)
    assert found[0]["digest"] == image.digest
    assert sorted(map(_key, found[0]["findings"])) == sorted(
        map(_key, fixtures.ALPINE_EXPECTED_FINDINGS))


def test_external_harbor_adapter_scans_beside_the_builtin_scanner(stack: Stack, vulndb,
                                                                  tmp_path: Path, monkeypatch):
    from rq import SimpleWorker

    from service.config import Settings
    from service.core.scans import request_scan
    from service.services import Services
    from tests.helpers.harbor_double import HarborDouble
    from workers.context import services

    image = oci.Image(layers=fixtures.alpine_image_layers(), labels={"scanner": "external"})
    push_layout(stack, tmp_path, image, "scanned/external:v1.0.0")
    vulnerability = {"id": "CVE-2099-0001", "package": "busybox", "version": "1.36.1-r15",
                     "fix_version": "1.36.1-r16", "severity": "Critical",
                     "links": ["https://avd.aquasec.com/nvd/cve-2099-0001"]}
    with HarborDouble(vulnerabilities=[vulnerability], pending_polls=1,
                      refresh_after=0) as double:
        env = {**stack.env, "TAGWARDEN_QUEUE": "external-scans",
               "TAGWARDEN_SCANNER_URL": double.url, "TAGWARDEN_SCANNER_MODE": "both"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        services.cache_clear()
        svc = Services.build(Settings.from_env())
        scan, created = request_scan(svc, "scanned/external", image.digest, "test")
        assert created
        SimpleWorker([svc.queue], connection=svc.rq_redis).work(burst=True)
        services.cache_clear()
        assert double.seen("POST", "/api/v1/scan")
    result = svc.scans.get(scan["id"])
    assert result["status"] == "succeeded", result.get("error")
    external = [f for f in result["findings"] if f.get("scanner") == "external"]
    assert [(f["id"], f["package"], f["severity"], f["fixed_version"]) for f in external] == [
        ("CVE-2099-0001", "busybox", "critical", "1.36.1-r16")]
    builtin = [f for f in result["findings"] if f.get("scanner") != "external"]
    assert sorted(map(_key, builtin)) == sorted(map(_key, fixtures.ALPINE_EXPECTED_FINDINGS))
    assert result["summary"]["critical"] == 1
