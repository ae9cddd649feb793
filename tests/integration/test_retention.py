"""Retention against the real stack (issue 19 item 1): a dry run reports exactly what would go
and every reason the rest stays; a real run deletes real manifests in the registry (HEAD 404),
keeps bindings, and records events; `tagwarden gc` then frees real bytes on disk (with the
registry stopped, as documented); other teams' tokens and forged bodies are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from service.store.retention import RetentionStore
from testkit import oci, procs
from tests.integration.conftest import Stack, start_stack
from tests.integration.test_attacks import Client, registry, sha, token

REPO = "ret/app"
DAY = 86400
POLICY = {"name": "retention", "repositories": ["ret/*"],
          "push": {"allow": ["semver", "other"], "immutable": ["semver"]},
          "promotion": {"develop": {}, "staging": {"from": "develop"},
                        "production": {"from": "staging"}},
          "scan_on_push": False,
          "retention": {"keep_per_environment": 1, "keep_releases": 2, "keep_newer_than": "1h",
                        "delete_untagged": True}}


@pytest.fixture(scope="module")
def rstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the test stops its registry for `tagwarden gc`."""
    s = start_stack(tmp_path_factory.mktemp("retention"))
    yield s
    s.stop()


def push_untagged(client: Client, repo: str, seed: str) -> tuple[str, bytes]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = f"untagged layer {seed} {uuid.uuid4()}".encode() * 50
    blobs = [client.blob(repo, config), client.blob(repo, layer)]
    body = json.dumps({
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": blobs[0], "size": len(config)},
        "layers": [{"mediaType": oci.OCI_LAYER, "digest": blobs[1], "size": len(layer)}],
    }).encode()
    resp = client.put_manifest(repo, sha(body), body, oci.OCI_MANIFEST)
    assert resp.status_code == 201, resp.text
    return sha(body), body


def api(stack: Stack, method: str, path: str, secret: str = procs.ADMIN_TOKEN,
        **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{stack.gw_url}/api/v1{path}", timeout=30,
                            headers={"Authorization": f"Bearer {secret}"}, **kwargs)


def finished(stack: Stack, run_id: str, secret: str = procs.ADMIN_TOKEN) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        resp = api(stack, "GET", f"/retention/runs/{run_id}", secret)
        assert resp.status_code == 200, resp.text
        if resp.json()["status"] in ("succeeded", "failed"):
            return resp.json()
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def stored_bytes(stack: Stack, digest: str) -> int:
    """What the report must say a deleted manifest weighs: its bytes and those it declares."""
    body = registry(stack, "GET", f"/v2/{REPO}/manifests/{digest}").content
    parsed = json.loads(body)
    declared = [parsed["config"], *parsed["layers"]] if "config" in parsed else []
    return len(body) + sum(item["size"] for item in declared)


@pytest.fixture(scope="module")
def world(rstack: Stack) -> dict[str, Any]:
    """Releases, an old mutable tag, untagged digests, an old index; promotions and a
    rollback; push times set as if pushed days ago."""
    stack = rstack
    assert api(stack, "PUT", "/policies/retention", json=POLICY).status_code == 200
    admin = Client(stack, procs.ADMIN_TOKEN)
    d: dict[str, str] = {}
    for name, tag in [("old", "v0.9.0"), ("a", "v1.0.0"), ("b", "v1.1.0"), ("c", "v1.2.0"),
                      ("d", "v1.3.0"), ("pr", "pr-1"), ("new", "pr-2")]:
        d[name], _ = admin.image(REPO, tag, name)
    d["u1"], _ = push_untagged(admin, REPO, "u1")
    d["m1"], _ = push_untagged(admin, REPO, "m1")
    d["m2"], _ = push_untagged(admin, REPO, "m2")
    d["m"] = admin.index(REPO, "multi", [d["m1"], d["m2"]])
    for env, name in [("develop", "a"), ("staging", "a"), ("develop", "b"), ("staging", "b"),
                      ("develop", "c"), ("production", "a")]:
        resp = api(stack, "POST", "/promotions", json={"repository": REPO, "environment": env,
                                                       "digest": d[name]})
        assert resp.status_code == 201, resp.text
    resp = api(stack, "POST", "/rollbacks", json={"repository": REPO, "environment": "staging"})
    assert resp.status_code == 201 and resp.json()["digest"] == d["a"], resp.text
    return {"d": d, "bytes": {n: stored_bytes(stack, d[n]) for n in
                              ("old", "pr", "u1", "m", "m1", "m2")}}


AGES = {"old": 10 * DAY, "a": 5 * DAY, "b": 4 * DAY, "c": 3 * DAY, "d": 2 * DAY, "pr": 2 * DAY,
        "u1": 2 * DAY, "m": 2 * DAY, "m1": 2 * DAY, "m2": 2 * DAY, "new": 600}


def start(stack: Stack, world: dict[str, Any], body: dict[str, Any]) -> requests.Response:
    """Start a run, push times set just before as if pushed AGES ago."""
    now = time.time()
    RetentionStore(stack.redis_client()).set_pushed(
        REPO, {world["d"][name]: now - age for name, age in AGES.items()})
    return api(stack, "POST", "/retention/runs", json=body)


def expected_kept(d: dict[str, str]) -> dict[str, tuple[list[str], list[str]]]:
    return {
        d["a"]: (["production", "staging", "v1.0.0"],
                 ["staging points here", "production points here"]),
        d["b"]: (["v1.1.0"], ["rollback target #1 of develop", "rollback target #1 of staging"]),
        d["c"]: (["develop", "v1.2.0"], ["develop points here",
                                         "release v1.2.0 among the newest 2"]),
        d["d"]: (["v1.3.0"], ["release v1.3.0 among the newest 2"]),
        d["new"]: (["pr-2"], ["pushed 10 minutes ago"]),
    }


def expected_deleted(world: dict[str, Any]) -> dict[str, tuple[list[str], int]]:
    d, size = world["d"], world["bytes"]
    return {d["old"]: (["v0.9.0"], size["old"]), d["pr"]: (["pr-1"], size["pr"]),
            d["u1"]: ([], size["u1"]), d["m"]: (["multi"], size["m"]),
            d["m1"]: ([], size["m1"]), d["m2"]: ([], size["m2"])}


def check_report(report: dict[str, Any], world: dict[str, Any], dry_run: bool) -> None:
    assert report["status"] == "succeeded", report
    assert report["dry_run"] is dry_run
    assert report["repositories"][0]["repository"] == REPO
    assert {k["digest"]: (k["tags"], k["reasons"]) for k in report["kept"]} == expected_kept(
        world["d"])
    deleted = {x["digest"]: (x["tags"], x["bytes"]) for x in report["deleted"]}
    assert deleted == expected_deleted(world)
    order = [x["digest"] for x in report["deleted"]]
    assert order.index(world["d"]["m"]) < order.index(world["d"]["m1"])  # index first
    # every deleted image has blobs of its own: all of them can be reclaimed
    assert report["bytes_freed"] == sum(size for _, size in deleted.values())


def test_a_dry_run_reports_every_reason_and_changes_nothing(rstack: Stack, world: dict):
    resp = start(rstack, world, {"repository": "ret/*"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued" and resp.json()["dry_run"] is True
    check_report(finished(rstack, resp.json()["id"]), world, dry_run=True)
    for digest in world["d"].values():
        assert registry(rstack, "HEAD", f"/v2/{REPO}/manifests/{digest}").status_code == 200


def test_another_teams_token_cannot_start_a_run(rstack: Stack, world: dict):
    ci = token(rstack, "ret-ci", "ci", repositories=["ret/*"])
    other_admin = token(rstack, "other-admin", "admin", repositories=["other/*"])
    for secret, body in [(ci, {"repository": "ret/*", "dry_run": False}),
                         (other_admin, {"repository": "ret/*", "dry_run": False}),
                         (other_admin, {"dry_run": False})]:  # no glob: every repository
        resp = api(rstack, "POST", "/retention/runs", secret, json=body)
        assert resp.status_code == 403, resp.text
        assert resp.json()["code"] == "forbidden"
    for digest in world["d"].values():
        assert registry(rstack, "HEAD", f"/v2/{REPO}/manifests/{digest}").status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"dry_run": False, "delete_everything": True}, "delete_everything"),
    ({"dry_run": "false"}, "dry_run"),
    ({"repository": "../*", "dry_run": False}, "repository"),
    ({"repository": ["ret/*"]}, "repository"),
])
def test_a_forged_body_is_refused(rstack: Stack, body: dict, field: str):
    resp = api(rstack, "POST", "/retention/runs", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "invalid_request"
    assert list(resp.json()["errors"]) == [field]


def test_an_unknown_or_hostile_run_id_is_404(rstack: Stack):
    for run_id in ("ret_nothing", "x" * 300, "..%2F..%2Fpolicies"):
        resp = api(rstack, "GET", f"/retention/runs/{run_id}")
        assert resp.status_code == 404, resp.text
        assert resp.json()["code"] == "not_found"


def test_a_real_run_deletes_real_manifests_then_gc_frees_real_bytes(rstack: Stack,
                                                                   world: dict):
    d = world["d"]
    resp = start(rstack, world, {"repository": REPO, "dry_run": False})
    assert resp.status_code == 202, resp.text
    report = finished(rstack, resp.json()["id"])
    check_report(report, world, dry_run=False)
    for digest in expected_deleted(world):
        assert registry(rstack, "HEAD", f"/v2/{REPO}/manifests/{digest}").status_code == 404
    for digest in expected_kept(d):
        assert registry(rstack, "HEAD", f"/v2/{REPO}/manifests/{digest}").status_code == 200
    # the release's binding stays: v0.9.0 can never name other content
    bindings = api(rstack, "GET", f"/tag-bindings?repository={REPO}").json()["items"]
    assert {b["tag"]: b["digest"] for b in bindings}["v0.9.0"] == d["old"]
    again = Client(rstack, procs.ADMIN_TOKEN).put_manifest(
        REPO, "v0.9.0", registry(rstack, "GET", f"/v2/{REPO}/manifests/{d['a']}").content,
        oci.OCI_MANIFEST)
    assert again.status_code == 403 and "push.immutable" in again.text
    events = api(rstack, "GET", f"/events?repository={REPO}&action=retention.deleted").json()
    assert sorted(e["digest"] for e in events["items"]) == sorted(expected_deleted(world))
    # a scoped reader sees the report of its repositories only
    reader = token(rstack, "other-reader", "reader", repositories=["other/*"])
    cut = api(rstack, "GET", f"/retention/runs/{report['id']}", reader).json()
    assert (cut["kept"], cut["deleted"], cut["bytes_freed"]) == ([], [], 0)

    config = rstack.workdir / "registry" / "config.yml"
    rstack.registry.stop()  # distribution's collector needs the registry stopped (or read-only)
    try:
        out = subprocess.run([str(Path(sys.executable).parent / "tagwarden"), "gc", "--config",
                              str(config), "--json"], capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        from service.core.gc import disk_bytes

        assert result["bytes_after"] == disk_bytes(rstack.workdir / "registry" / "data")
        assert result["bytes_reclaimed"] == result["bytes_before"] - result["bytes_after"]
        # the deleted manifests and the blobs only they used are gone from disk
        assert result["bytes_reclaimed"] >= report["bytes_freed"] > 0
    finally:
        rstack.registry.start()
        procs.wait_http(f"{rstack.reg_url}/v2/")
    for digest in expected_kept(d):  # what stays is whole: manifest and blobs
        manifest = registry(rstack, "GET", f"/v2/{REPO}/manifests/{digest}").json()
        for blob in [manifest["config"], *manifest["layers"]]:
            assert registry(rstack, "HEAD",
                            f"/v2/{REPO}/blobs/{blob['digest']}").status_code == 200
