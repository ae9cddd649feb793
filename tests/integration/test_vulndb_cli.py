"""The OSV import through the API (`tagwarden vulndb import`, POST /api/v1/vulndb/imports),
`tagwarden scan --wait`, and the scan gate's message before and after a database is loaded."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from testkit import scan_fixtures as fixtures
from tests.integration.conftest import Stack, start_stack
from tests.integration.test_attacks import token
from tests.integration.test_cli import as_json, ok, tw
from tests.integration.test_promotions import push

POLICY = {"name": "gated", "repositories": ["gated/*"], "scan_on_push": False,
          "promotion": {"develop": {}, "staging": {"from": "develop"},
                        "production": {"from": "staging",
                                       "scan": {"required": True, "max_severity": "critical"}}}}
UPLOAD_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: no vulnerability database until a test loads one, small uploads."""
    workdir = tmp_path_factory.mktemp("vulndb")
    (workdir / "osv-root").mkdir()
    s = start_stack(workdir, TAGWARDEN_VULNDB_UPLOAD_MAX_BYTES=str(UPLOAD_LIMIT),
                    TAGWARDEN_VULNDB_IMPORT_ROOT=str(workdir / "osv-root"))
    resp = s.admin().put(f"{s.gw_url}/api/v1/policies/gated", json=POLICY, timeout=10)
    assert resp.status_code == 200, resp.text
    yield s
    s.stop()


def osv_zip(tmp_path: Path) -> bytes:
    directory = fixtures.write_osv_dir(tmp_path / "osv", fixtures.osv_fixture_records())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for file in sorted(directory.rglob("*.json")):
            archive.write(file, file.name)
    return buffer.getvalue()


def imports(stack: Stack, auth: str, **kwargs) -> requests.Response:
    return requests.post(f"{stack.gw_url}/api/v1/vulndb/imports", timeout=60,
                         headers={"Authorization": f"Bearer {auth}"}, **kwargs)


def test_scan_gate_names_the_failed_scan_then_an_import_through_the_api_helps(
        small_stack: Stack, tmp_path: Path):
    stack, repo = small_stack, "gated/app"
    image = push(stack, tmp_path, "gated-1", f"{repo}:v1.0.0")
    for env in ("develop", "staging"):
        ok(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", env))
    never = tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "production")
    assert never.returncode == 2
    assert (f"[promotion.scan_required] 'production' requires a succeeded scan of "
            f"{image.digest} and it was never scanned; run tagwarden scan --repository {repo} "
            f"--digest {image.digest} --wait") in never.stderr

    failed = tw(stack, "scan", "--repository", repo, "--tag", "v1.0.0", "--wait")
    assert failed.returncode == 1
    scan_id = failed.stdout.split()[1]
    assert failed.stdout.startswith(f"scan {scan_id} of {repo} {image.digest}: failed: "
                                    "no vulnerability database loaded")
    denied = as_json(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to",
                        "production", "--json"), code=2)
    message = denied["violations"][0]["message"]
    assert message.startswith(f"'production' requires a succeeded scan of {image.digest}; its "
                              f"newest scan {scan_id} failed at ")
    assert ": no vulnerability database loaded" in message
    assert "load one first (tagwarden vulndb import PATH" in message
    assert "there is none" not in message

    directory = fixtures.write_osv_dir(tmp_path / "osv", fixtures.osv_fixture_records())
    loaded = ok(tw(stack, "vulndb", "import", str(directory)))
    records = len(fixtures.osv_fixture_records())
    assert loaded.startswith(f"vulnerability database v1 loaded: {records} records (")
    assert loaded.rstrip().endswith("; 1 rescans queued")  # what develop and staging run
    scanned = ok(tw(stack, "scan", "--repository", repo, "--digest", image.digest, "--wait"))
    assert scanned.startswith("scan scn_") and f"{image.digest}: succeeded (critical 0" in scanned
    done = as_json(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to",
                      "production", "--json"))
    assert done["digest"] == image.digest


def test_import_endpoint_refuses_hostile_requests(small_stack: Stack, tmp_path: Path):
    stack = small_stack
    good = osv_zip(tmp_path)
    ci = token(stack, "vulndb-ci", "ci")
    reader = token(stack, "vulndb-reader", "reader")
    for who in (ci, reader):
        refused = imports(stack, who, files={"file": ("osv.zip", good)})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    admin = stack.admin().headers["Authorization"].split()[1]
    not_zip = imports(stack, admin, files={"file": ("osv.zip", b"PK\x03\x04 forged" * 10)})
    assert not_zip.status_code == 400
    assert not_zip.json()["message"].startswith("the upload is not a zip archive")
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("../../etc/cron.d/evil", b"* * * * * root sh")
    no_json = imports(stack, admin, files={"file": ("osv.zip", empty.getvalue())})
    assert no_json.status_code == 400
    assert no_json.json()["message"] == "the zip holds no .json OSV advisories"
    huge = imports(stack, admin, files={"file": ("osv.zip", b"\0" * (UPLOAD_LIMIT + 1))})
    assert huge.status_code == 413
    both = imports(stack, admin, files={"file": ("osv.zip", good)}, data={"path": "/etc"})
    assert both.status_code == 400 and "exactly one of" in both.json()["message"]
    relative = imports(stack, admin, data={"path": "etc"})
    assert relative.status_code == 400 and relative.json()["errors"] == {
        "path": ["an absolute path"]}
    root = stack.workdir / "osv-root"
    for outside in ("/", "/etc", f"{root}/../redis", f"{root}-sibling"):
        escaped = imports(stack, admin, data={"path": outside})
        assert escaped.status_code == 403, (outside, escaped.text)
        assert "is outside TAGWARDEN_VULNDB_IMPORT_ROOT" in escaped.json()["message"]
    (root / "link").symlink_to("/etc")
    linked = imports(stack, admin, data={"path": f"{root}/link"})
    assert linked.status_code == 403
    nothing = imports(stack, admin, data={"path": f"{root}/nonexistent"})
    assert nothing.status_code == 400
    assert nothing.json()["message"].startswith(f"nothing to import at '{root}/nonexistent'")
    fixtures.write_osv_dir(root / "osv", fixtures.osv_fixture_records())
    served = ok(tw(stack, "vulndb", "import", "--server-path", str(root / "osv"),
                   "--no-rescan", "--json"))
    assert json.loads(served)["records"] == len(fixtures.osv_fixture_records())
    forged = imports(stack, admin, data={"path": "/etc", "role": "admin"})
    assert forged.status_code == 422 and "role" in forged.json()["errors"]
    cli_ci = tw(stack, "vulndb", "import", str(tmp_path / "missing"))
    assert cli_ci.returncode == 1 and cli_ci.stderr.startswith("error: ")
    assert "Traceback" not in cli_ci.stderr

    first = imports(stack, admin, files={"file": ("osv.zip", good)}, data={"rescan": "false"})
    again = imports(stack, admin, files={"file": ("osv.zip", good)}, data={"rescan": "false"})
    assert first.status_code == again.status_code == 201
    assert again.json()["version"] == first.json()["version"] + 1
    assert again.json()["records"] == first.json()["records"] == len(
        fixtures.osv_fixture_records())
    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit", timeout=10,
                              params={"action": "vulndb.import"}).json()["items"]
    assert [a["outcome"] for a in audit][:2] == ["success", "success"]
    assert "denied" in [a["outcome"] for a in audit]
