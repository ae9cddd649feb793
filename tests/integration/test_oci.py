"""Issue 18: OCI Distribution 1.1 through the gateway, beyond distribution 2.8 behind it.

Each behaviour the conformance suite checks is pinned here against the real stack (real
redis-server, docker-registry, gunicorn gateway and RQ worker), with the registry's own
state checked directly, and each new way to change state is tried by a hostile caller.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from testkit import oci, procs
from tests.integration.conftest import Stack
from tests.integration.test_attacks import (
    Client,
    denied_rule,
    forged,
    promote,
    registry,
    send_events,
    sha,
    token,
    wait_drained,
    wait_for,
)

SBOM = "application/spdx+json"
SIGNATURE = "application/vnd.example.signature.v1+json"
EMPTY = b"{}"
EMPTY_DESCRIPTOR = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha(EMPTY),
                    "size": 2}
POLICY = {"name": "oci", "repositories": ["oci/*", "oci-secret/*"],
          "push": {"allow": ["semver", "git-sha", "other"], "immutable": ["semver"]},
          "promotion": {"develop": {}, "staging": {"from": "develop"},
                        "production": {"from": "staging", "referrers": [
                            {"artifact_type": SBOM}]}},
          "scan_on_push": False}


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, Any]:
    """The policy, an admin and a ci token scoped to `oci/*`."""
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/oci", json=POLICY, timeout=10)
    assert resp.status_code == 200, resp.text
    return {"admin": Client(stack, procs.ADMIN_TOKEN),
            "ci": Client(stack, token(stack, "oci-ci", "ci", repositories=["oci/*"]))}


def error_code(resp: requests.Response) -> str:
    return resp.json()["errors"][0]["code"]


# -- 1. a manifest read under an impossible tag ----------------------------------------------
def test_a_manifest_read_under_an_invalid_tag_is_manifest_unknown(stack: Stack, world: dict):
    admin = world["admin"]
    got = admin.call("GET", "/v2/oci/app/manifests/.INVALID_MANIFEST_NAME")
    assert (got.status_code, error_code(got)) == (404, "MANIFEST_UNKNOWN")
    assert admin.call("HEAD", "/v2/oci/app/manifests/.INVALID_MANIFEST_NAME").status_code == 404
    put = admin.put_manifest("oci/app", ".INVALID_MANIFEST_NAME", b"{}", oci.OCI_MANIFEST)
    assert (put.status_code, error_code(put)) == (400, "TAG_INVALID")


# -- 2. chunked uploads ------------------------------------------------------------------------
def patch(client: Client, location: str, chunk: bytes, first: int | None,
          content_range: str | None = None) -> requests.Response:
    headers = {"Content-Type": "application/octet-stream"}
    if first is not None:
        headers["Content-Range"] = content_range or f"{first}-{first + len(chunk) - 1}"
    return client.session.patch(location, data=chunk, headers=headers, timeout=20,
                                 allow_redirects=False)


def finish(client: Client, location: str, digest: str) -> requests.Response:
    sep = "&" if "?" in location else "?"
    return client.session.put(f"{location}{sep}digest={digest}", timeout=20,
                              headers={"Content-Type": "application/octet-stream"})


def test_chunks_out_of_order_or_repeated_are_416_and_the_upload_survives(stack: Stack,
                                                                         world: dict):
    ci = world["ci"]
    blob = uuid.uuid4().hex.encode() * 20  # 640 bytes
    one, two = blob[:300], blob[300:]
    start = ci.call("POST", "/v2/oci/chunks/blobs/uploads/")
    assert start.status_code == 202
    first_location = start.headers["Location"]
    # out of order: the second chunk first
    early = patch(ci, first_location, two, 300)
    assert (early.status_code, early.headers["Range"]) == (416, "0-0")
    accepted = patch(ci, first_location, one, 0)
    assert (accepted.status_code, accepted.headers["Range"]) == (202, "0-299")
    # the first chunk again, at the Location it was first sent to (a stale _state)
    again = patch(ci, first_location, one, 0)
    assert (again.status_code, again.headers["Range"]) == (416, "0-299")
    status = ci.session.get(first_location, timeout=20, allow_redirects=False)
    assert (status.status_code, status.headers["Range"]) == (204, "0-299")
    uuid_ = start.headers["Docker-Upload-UUID"]
    assert f"/v2/oci/chunks/blobs/uploads/{uuid_}?_state=" in status.headers["Location"]
    rest = patch(ci, status.headers["Location"], two, 300)
    assert (rest.status_code, rest.headers["Range"]) == (202, "0-639")
    done = finish(ci, rest.headers["Location"], sha(blob))
    assert done.status_code == 201, done.text
    stored = registry(stack, "GET", f"/v2/oci/chunks/blobs/{sha(blob)}")
    assert (stored.status_code, stored.content) == (200, blob)


def test_a_malformed_content_range_is_refused_and_the_upload_survives(stack: Stack,
                                                                      world: dict):
    ci = world["ci"]
    blob = b"x" * 100
    start = ci.call("POST", "/v2/oci/chunks2/blobs/uploads/")
    location = start.headers["Location"]
    bad = patch(ci, location, blob, 0, "bytes=zero-99")
    assert (bad.status_code, error_code(bad)) == (400, "BLOB_UPLOAD_INVALID")
    short = patch(ci, location, blob, 0, "0-49")  # claims 50 bytes, sends 100
    assert short.status_code == 416
    ok = patch(ci, location, blob, 0)
    assert (ok.status_code, ok.headers["Range"]) == (202, "0-99")
    assert finish(ci, ok.headers["Location"], sha(blob)).status_code == 201


def test_another_teams_upload_session_is_none_of_yours(stack: Stack, world: dict):
    """A ci token of `oci/*` names the upload id of a session in `oci-secret/*`: it neither
    learns the session's state nor disturbs it; the owner finishes the upload."""
    admin, ci = world["admin"], world["ci"]
    blob = uuid.uuid4().hex.encode() * 4
    start = admin.call("POST", "/v2/oci-secret/x/blobs/uploads/")
    accepted = patch(admin, start.headers["Location"], blob[:64], 0)
    assert accepted.status_code == 202
    upload_id = start.headers["Docker-Upload-UUID"]
    assert ci.call("GET", f"/v2/oci-secret/x/blobs/uploads/{upload_id}").status_code == 403
    mine = f"/v2/oci/x/blobs/uploads/{upload_id}"
    probe = ci.call("GET", mine)
    assert probe.status_code in (400, 404) and "Location" not in probe.headers
    # a replay of the owner's own Location, path moved into the caller's repository
    state = accepted.headers["Location"].partition("?")[2]
    for method in ("PATCH", "PUT", "DELETE"):
        resp = ci.call(method, f"{mine}?{state}", data=blob[64:],
                       headers={"Content-Range": f"64-{len(blob) - 1}"})
        assert resp.status_code >= 400, (method, resp.status_code)
    rest = patch(admin, accepted.headers["Location"], blob[64:], 64)
    assert (rest.status_code, rest.headers["Range"]) == (202, f"0-{len(blob) - 1}")
    assert finish(admin, rest.headers["Location"], sha(blob)).status_code == 201


def test_a_mount_without_from_finds_a_source_the_caller_may_read(stack: Stack, world: dict):
    admin, ci = world["admin"], world["ci"]
    own = ci.blob("oci/mount-src", b"a layer of oci/mount-src " + uuid.uuid4().bytes)
    secret = admin.blob("oci-secret/mount-src", b"a secret layer " + uuid.uuid4().bytes)
    mounted = ci.call("POST", f"/v2/oci/mount-dst/blobs/uploads/?mount={own}")
    assert mounted.status_code == 201, mounted.text
    assert registry(stack, "HEAD", f"/v2/oci/mount-dst/blobs/{own}").status_code == 200
    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit", timeout=10, params={
        "action": "blob.mount", "repository": "oci/mount-dst"}).json()["items"]
    assert [(a["target"]["from"], a["outcome"]) for a in audit] == [("oci/mount-src",
                                                                     "success")]
    # a blob only another team's repository holds: an ordinary upload session
    refused = ci.call("POST", f"/v2/oci/mount-dst/blobs/uploads/?mount={secret}")
    assert refused.status_code == 202
    assert registry(stack, "HEAD", f"/v2/oci/mount-dst/blobs/{secret}").status_code == 404


# -- 3. referrers ------------------------------------------------------------------------------
def referrer(client: Client, repo: str, subject: str, *, artifact_type: str | None = None,
             config_type: str | None = None, note: str = "", ref: str | None = None
             ) -> tuple[str, bytes, requests.Response]:
    """Push an artifact manifest whose subject is `subject` (by digest unless `ref`)."""
    client.blob(repo, EMPTY)
    layer = f"artifact {note} {uuid.uuid4()}".encode()
    config = ({**EMPTY_DESCRIPTOR, "mediaType": config_type} if config_type
              else EMPTY_DESCRIPTOR)
    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": config,
        "layers": [{"mediaType": "application/octet-stream", "digest": client.blob(repo, layer),
                    "size": len(layer)}],
        "subject": {"mediaType": oci.OCI_MANIFEST, "digest": subject, "size": 1},
        "annotations": {"org.example.note": note}}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    body = json.dumps(manifest).encode()
    resp = client.put_manifest(repo, ref or sha(body), body, oci.OCI_MANIFEST)
    return sha(body), body, resp


def referrers(client: Client, repo: str, digest: str, **params: str) -> requests.Response:
    return client.call("GET", f"/v2/{repo}/referrers/{digest}", params=params)


def test_referrers_are_listed_filtered_and_forgotten_on_delete(stack: Stack, world: dict):
    ci, admin = world["ci"], world["admin"]
    subject, _ = ci.image("oci/ref", "base", "subject")
    sbom, sbom_body, put = referrer(ci, "oci/ref", subject, artifact_type=SBOM, note="sbom")
    assert (put.status_code, put.headers["OCI-Subject"]) == (201, subject)
    sig, sig_body, put = referrer(ci, "oci/ref", subject, config_type=SIGNATURE, note="sig")
    assert (put.status_code, put.headers["OCI-Subject"]) == (201, subject)
    assert "OCI-Subject" not in ci.put_manifest(
        "oci/ref", "plain", registry(stack, "GET", f"/v2/oci/ref/manifests/{subject}").content,
        oci.OCI_MANIFEST).headers
    listed = referrers(ci, "oci/ref", subject)
    assert listed.status_code == 200
    assert listed.headers["Content-Type"] == oci.OCI_INDEX
    assert "OCI-Filters-Applied" not in listed.headers
    expected = sorted([
        {"mediaType": oci.OCI_MANIFEST, "digest": sbom, "size": len(sbom_body),
         "artifactType": SBOM, "annotations": {"org.example.note": "sbom"}},
        {"mediaType": oci.OCI_MANIFEST, "digest": sig, "size": len(sig_body),
         "artifactType": SIGNATURE, "annotations": {"org.example.note": "sig"}},
    ], key=lambda d: d["digest"])
    assert listed.json() == {"schemaVersion": 2, "mediaType": oci.OCI_INDEX,
                             "manifests": expected}
    only = referrers(ci, "oci/ref", subject, artifactType=SBOM)
    assert only.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in only.json()["manifests"]] == [sbom]
    for nothing in ("sha256:" + "0" * 64, sbom):  # no manifest / a manifest no one refers to
        empty = referrers(ci, "oci/ref", nothing)
        assert (empty.status_code, empty.json()["manifests"]) == (200, [])
    assert admin.call("DELETE", f"/v2/oci/ref/manifests/{sig}").status_code == 202
    assert [d["digest"] for d in referrers(ci, "oci/ref", subject).json()["manifests"]] == [sbom]


def test_a_referrer_to_a_missing_subject_is_listed(stack: Stack, world: dict):
    ci = world["ci"]
    missing = "sha256:" + uuid.uuid4().hex * 2
    digest, _, put = referrer(ci, "oci/orphan", missing, artifact_type=SBOM)
    assert (put.status_code, put.headers["OCI-Subject"]) == (201, missing)
    assert [d["digest"] for d in referrers(ci, "oci/orphan", missing).json()["manifests"]] == [
        digest]


def test_referrers_of_another_teams_repository_are_not_listed(stack: Stack, world: dict):
    admin, ci = world["admin"], world["ci"]
    subject, _ = admin.image("oci-secret/ref", "base", "secret")
    referrer(admin, "oci-secret/ref", subject, artifact_type=SBOM)
    assert referrers(ci, "oci-secret/ref", subject).status_code == 403
    # the index is per repository: the same digest elsewhere has none
    assert referrers(ci, "oci/ref-elsewhere", subject).json()["manifests"] == []


def test_referrers_pushed_behind_the_gateway_are_indexed_from_events(stack: Stack,
                                                                     world: dict):
    admin, ci = world["admin"], world["ci"]
    subject, _ = ci.image("oci/behind", "base", "behind")
    admin.blob("oci/behind", EMPTY)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": SBOM,
        "config": EMPTY_DESCRIPTOR, "layers": [EMPTY_DESCRIPTOR],
        "subject": {"mediaType": oci.OCI_MANIFEST, "digest": subject, "size": 1}}).encode()
    direct = registry(stack, "PUT", f"/v2/oci/behind/manifests/{sha(body)}", data=body,
                      headers={"Content-Type": oci.OCI_MANIFEST})
    assert direct.status_code == 201
    wait_for(lambda: referrers(ci, "oci/behind", subject).json()["manifests"])
    assert [d["digest"] for d in referrers(ci, "oci/behind", subject).json()["manifests"]] \
        == [sha(body)]
    assert registry(stack, "DELETE", f"/v2/oci/behind/manifests/{sha(body)}").status_code == 202
    wait_for(lambda: not referrers(ci, "oci/behind", subject).json()["manifests"])


def test_forged_push_events_index_nothing(stack: Stack, world: dict):
    ci = world["ci"]
    subject, _ = ci.image("oci/forged", "base", "forged")
    sbom, _, _ = referrer(ci, "oci/forged", subject, artifact_type=SBOM)
    fake = "sha256:" + uuid.uuid4().hex * 2
    send_events(stack, forged("push", "oci/forged", digest=fake),
                forged("delete", "oci/forged", digest=sbom))
    wait_drained(stack)
    assert [d["digest"] for d in referrers(ci, "oci/forged", subject).json()["manifests"]] \
        == [sbom]


# -- 4. DELETE by tag --------------------------------------------------------------------------
def test_delete_by_tag_drops_that_tag_only(stack: Stack, world: dict):
    ci = world["ci"]
    digest, _ = ci.image("oci/untag", "feature", "untag")
    manifest = registry(stack, "GET", f"/v2/oci/untag/manifests/{digest}").content
    assert ci.put_manifest("oci/untag", "keep", manifest, oci.OCI_MANIFEST).status_code == 201
    gone = ci.call("DELETE", "/v2/oci/untag/manifests/feature")
    assert gone.status_code == 202
    assert registry(stack, "HEAD", "/v2/oci/untag/manifests/feature").status_code == 404
    kept = registry(stack, "HEAD", "/v2/oci/untag/manifests/keep")
    assert (kept.status_code, kept.headers["Docker-Content-Digest"]) == (200, digest)
    assert sorted(registry(stack, "GET", "/v2/oci/untag/tags/list").json()["tags"]) == ["keep"]
    assert "feature" not in stack.redis_client().hgetall("tw:tags:oci/untag")
    again = ci.call("DELETE", "/v2/oci/untag/manifests/feature")
    assert (again.status_code, error_code(again)) == (404, "MANIFEST_UNKNOWN")
    # the last tag of a digest: the digest stays, untagged
    assert ci.call("DELETE", "/v2/oci/untag/manifests/keep").status_code == 202
    assert registry(stack, "HEAD", f"/v2/oci/untag/manifests/{digest}").status_code == 200


def test_delete_by_tag_keeps_release_and_environment_tags(stack: Stack, world: dict):
    ci, admin = world["ci"], world["admin"]
    digest, _ = ci.image("oci/guarded", "v1.0.0", "guarded")
    promote(stack, "oci/guarded", digest, "develop")
    for who in (ci, admin):
        assert denied_rule(who.call("DELETE", "/v2/oci/guarded/manifests/v1.0.0")) \
            == "push.immutable"
        assert denied_rule(who.call("DELETE", "/v2/oci/guarded/manifests/develop")) \
            == "delete.in_use"
    for tag in ("v1.0.0", "develop"):
        found = registry(stack, "HEAD", f"/v2/oci/guarded/manifests/{tag}")
        assert found.headers["Docker-Content-Digest"] == digest


def test_delete_by_tag_needs_a_ci_token_of_the_repository(stack: Stack, world: dict):
    admin = world["admin"]
    admin.image("oci-secret/untag", "feature", "secret-untag")
    ci = world["ci"]
    reader = Client(stack, token(stack, "oci-reader", "reader", repositories=["oci-secret/*"]))
    for who in (ci, reader):
        assert who.call("DELETE", "/v2/oci-secret/untag/manifests/feature").status_code == 403
    assert registry(stack, "HEAD", "/v2/oci-secret/untag/manifests/feature").status_code == 200


# -- 5. the referrers promotion gate -----------------------------------------------------------
def test_production_requires_an_attached_sbom(stack: Stack, world: dict):
    ci = world["ci"]
    digest, _ = ci.image("oci/gated", "v2.0.0", "gated")
    promote(stack, "oci/gated", digest, "develop", "staging")
    url = f"{stack.gw_url}/api/v1/promotions"
    body = {"repository": "oci/gated", "environment": "production", "digest": digest}
    denied = stack.admin().post(url, json=body, timeout=30)
    assert denied.status_code == 403, denied.text
    assert [v["rule"] for v in denied.json()["violations"]] == ["promotion.referrers"]
    referrer(ci, "oci/gated", digest, config_type=SIGNATURE)  # not the type asked for
    assert stack.admin().post(url, json=body, timeout=30).status_code == 403
    referrer(ci, "oci/gated", digest, artifact_type=SBOM)
    done = stack.admin().post(url, json=body, timeout=30)
    assert (done.status_code, done.json()["digest"]) == (201, digest)
