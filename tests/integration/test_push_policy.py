"""Push-time tag governance through the gateway, with skopeo and the real registry."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import requests

from testkit import oci, procs
from tests.integration.conftest import CI_CREDS, V2, Stack


def _layout(tmp_path: Path, name: str, image: oci.Image) -> Path:
    return oci.write_layout(tmp_path / name, {"img": image})


def _push(stack: Stack, layout: Path, dest: str):
    return oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{dest}")


def _evaluate(stack: Stack, **body) -> dict:
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/policies/evaluate", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_latest_allowed_environment_tag_refused_with_message(stack: Stack, tmp_path: Path):
    layout = _layout(tmp_path, "a", oci.simple_image("pol-latest"))
    assert _push(stack, layout, "pol/app:latest").returncode == 0
    refused = _push(stack, layout, "pol/app:production")
    assert refused.returncode != 0
    assert "owned by the promotion API" in refused.stderr
    assert "push.reserved" in refused.stderr
    # nothing reached the registry under the reserved tag
    direct = V2.head(f"{stack.reg_url}/v2/pol/app/manifests/production",
                           headers={"Accept": oci.OCI_MANIFEST}, timeout=10)
    assert direct.status_code == 404
    verdict = _evaluate(stack, action="push", repository="pol/app", tag="production")
    assert verdict["allowed"] is False
    assert [v["rule"] for v in verdict["violations"]] == ["push.reserved"]
    assert verdict["policy"] == "default"
    events = stack.admin().get(f"{stack.gw_url}/api/v1/events",
                               params={"repository": "pol/app", "action": "push.denied"},
                               timeout=10)
    assert events.status_code == 200
    denied = events.json()["items"][0]
    assert (denied["tag"], denied["violations"][0]["rule"]) == ("production", "push.reserved")


def test_release_tags_are_immutable_but_same_digest_repush_succeeds(stack: Stack, tmp_path: Path):
    first = oci.simple_image("pol-immutable-1")
    second = oci.simple_image("pol-immutable-2")
    a, b = _layout(tmp_path, "a", first), _layout(tmp_path, "b", second)
    assert _push(stack, a, "pol/imm:v1.0.0").returncode == 0
    assert _evaluate(stack, action="push", repository="pol/imm", tag="v1.0.0",
                     digest=second.digest)["violations"][0]["rule"] == "push.immutable"
    assert _evaluate(stack, action="push", repository="pol/imm", tag="v1.0.0",
                     digest=first.digest)["allowed"] is True
    refused = _push(stack, b, "pol/imm:v1.0.0")
    assert refused.returncode != 0
    assert "push.immutable" in refused.stderr
    assert oci.skopeo_digest(f"docker://{stack.reg}/pol/imm:v1.0.0") == first.digest
    again = _push(stack, a, "pol/imm:v1.0.0")
    assert again.returncode == 0, again.stderr
    # a mutable class moves freely
    assert _push(stack, b, "pol/imm:latest").returncode == 0
    assert _push(stack, a, "pol/imm:latest").returncode == 0


def test_immutability_holds_for_content_pushed_before_the_gateway(stack: Stack, tmp_path: Path):
    first = oci.simple_image("pol-before-1")
    layout = _layout(tmp_path, "a", first)
    direct = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.reg}/pol/before:v3.0.0")
    assert direct.returncode == 0, direct.stderr
    other = _layout(tmp_path, "b", oci.simple_image("pol-before-2"))
    refused = _push(stack, other, "pol/before:v3.0.0")
    assert refused.returncode != 0 and "push.immutable" in refused.stderr


def test_immutability_holds_for_tags_pushed_behind_the_gateway_later(stack: Stack,
                                                                    tmp_path: Path):
    """Once the gateway vouches for a repository's tag map (no registry lookup for new tags),
    a release tag pushed straight to the registry reaches the map through the registry's
    notification, and the immutability check still sees it."""
    first = _layout(tmp_path, "a", oci.simple_image("pol-later-1"))
    assert _push(stack, first, "pol/later:v1.0.0").returncode == 0  # map now vouched for
    assert stack.redis_client().exists("tw:tags-complete:pol/later")
    behind = _layout(tmp_path, "b", oci.simple_image("pol-later-2"))
    direct = oci.skopeo_copy(f"oci:{behind}:img", f"docker://{stack.reg}/pol/later:v2.0.0")
    assert direct.returncode == 0, direct.stderr
    deadline = time.monotonic() + 20
    while stack.redis_client().hget("tw:tags:pol/later", "v2.0.0") is None:
        assert time.monotonic() < deadline, "the worker never learnt the tag pushed directly"
        time.sleep(0.1)
    refused = _push(stack, first, "pol/later:v2.0.0")
    assert refused.returncode != 0 and "push.immutable" in refused.stderr


def test_policy_put_with_deny_regex_refuses_tmp_tags(stack: Stack, tmp_path: Path):
    policy = {
        "name": "pol-deny",
        "repositories": ["pol-deny/*"],
        "push": {"allow": ["semver", "git-sha", "latest", "other"], "deny": ["regex:^tmp-"],
                 "immutable": ["semver"]},
    }
    created = stack.admin().put(f"{stack.gw_url}/api/v1/policies/pol-deny", json=policy,
                                timeout=10)
    assert created.status_code == 200, created.text
    assert created.json()["push"]["deny"] == ["regex:^tmp-"]
    layout = _layout(tmp_path, "a", oci.simple_image("pol-deny"))
    verdict = _evaluate(stack, action="push", repository="pol-deny/app", tag="tmp-x")
    assert verdict == {
        "allowed": False,
        "policy": "pol-deny",
        "violations": [{"rule": "push.denied", "policy": "pol-deny",
                        "message": verdict["violations"][0]["message"]}],
    }
    refused = _push(stack, layout, "pol-deny/app:tmp-x")
    assert refused.returncode != 0 and "push.denied" in refused.stderr
    assert _evaluate(stack, action="push", repository="pol-deny/app", tag="keep-x")["allowed"]
    assert _push(stack, layout, "pol-deny/app:keep-x").returncode == 0
    listed = stack.admin().get(f"{stack.gw_url}/api/v1/policies", timeout=10).json()
    assert "pol-deny" in [p["name"] for p in listed["items"]]
    assert stack.admin().delete(f"{stack.gw_url}/api/v1/policies/pol-deny",
                                timeout=10).status_code == 204
    assert _push(stack, layout, "pol-deny/app:tmp-y").returncode == 0


def _put_manifest(stack: Stack, path: str, body: bytes, media_type: str) -> requests.Response:
    return V2.put(f"{stack.gw_url}/v2/{path}", data=body,
                        headers={"Content-Type": media_type}, timeout=10)


def test_bad_manifests_are_refused_before_the_registry(stack: Stack):
    image = oci.simple_image("pol-bad")
    status, answer = procs.raw_request(stack.gateway.port, (
        "PUT /v2/pol/bad/manifests/v1.0.0 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Basic {base64.b64encode(CI_CREDS.encode()).decode()}\r\n"
        f"Content-Type: {oci.OCI_MANIFEST}\r\nContent-Length: {5 * 1024 * 1024}\r\n"
    ), b"{" + b" " * 1000)
    assert status == 400
    assert json.loads(answer)["errors"][0]["code"] == "MANIFEST_INVALID"
    assert "4 MiB" in answer.decode()
    cases = [
        ("pol/bad/manifests/v1.0.0", b"{nope", oci.OCI_MANIFEST, "MANIFEST_INVALID", "JSON"),
        ("pol/bad/manifests/v1.0.0", image.manifest_bytes(), "text/plain", "MANIFEST_INVALID",
         "media type"),
        ("pol/bad/manifests/v1.0.0", image.manifest_bytes(), oci.OCI_INDEX, "MANIFEST_INVALID",
         "does not match"),
        ("Pol/Bad/manifests/v1.0.0", image.manifest_bytes(), oci.OCI_MANIFEST, "NAME_INVALID",
         "repository"),
        ("pol/bad/manifests/-bad", image.manifest_bytes(), oci.OCI_MANIFEST, "TAG_INVALID",
         "tag"),
        (f"pol/bad/manifests/sha256:{'0' * 64}", image.manifest_bytes(), oci.OCI_MANIFEST,
         "DIGEST_INVALID", "digest"),
    ]
    for path, body, media_type, code, needle in cases:
        resp = _put_manifest(stack, path, body, media_type)
        assert resp.status_code == 400, (path, resp.text)
        error = resp.json()["errors"][0]
        assert error["code"] == code, (path, error)
        assert needle.lower() in json.dumps(error).lower(), (path, error)
    assert V2.get(f"{stack.reg_url}/v2/pol/bad/tags/list", timeout=10).status_code == 404


def test_policy_api_rejects_malformed_policies_naming_the_field(stack: Stack):
    bad = {"name": "broken", "repositories": ["x/*"],
           "push": {"allow": ["semver", "nonsense"]},
           "promotion": {"production": {"scan": {"max_severity": "extreme"}}}}
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/broken", json=bad, timeout=10)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["code"] == "invalid_request"
    assert "push.allow.1" in body["errors"]
    assert "promotion.production.scan.max_severity" in body["errors"]
    assert stack.admin().get(f"{stack.gw_url}/api/v1/policies/broken",
                             timeout=10).status_code == 404
    mismatch = stack.admin().put(f"{stack.gw_url}/api/v1/policies/other",
                                 json={"name": "broken", "repositories": ["x/*"]}, timeout=10)
    assert mismatch.status_code == 400
    assert mismatch.json()["errors"] == {"name": ["must be 'other'"]}
    garbage = stack.admin().put(f"{stack.gw_url}/api/v1/policies/g", data=b"{",
                                headers={"Content-Type": "application/json"}, timeout=10)
    assert garbage.status_code in (400, 422)
    assert garbage.json()["code"] == "invalid_request"


def test_recording_a_pushed_tag_releases_its_lock_in_the_same_call(stack: Stack):
    """The tag-map write of an immutable push releases the tag's lock (one round trip), but
    never a lock another push took after ours expired."""
    from service.store.tagmap import TagMap

    r = stack.redis_client()
    tags, digest = TagMap(r), "sha256:" + "a" * 64
    with tags.lock("pol/lock", "v1.0.0") as lock:
        assert r.exists(lock.name)
        tags.set("pol/lock", "v1.0.0", digest, lock)
        assert not r.exists(lock.name) and lock.local.token is None
    assert tags.get("pol/lock", "v1.0.0") == digest  # leaving the block raised nothing
    lock = tags.lock("pol/lock", "v2.0.0")
    assert lock.acquire()
    r.set(lock.name, "someone-else")  # ours expired; another push holds the tag now
    tags.set("pol/lock", "v2.0.0", digest, lock)
    assert r.get(lock.name) == "someone-else"
    lock.release()  # nothing left to release: no error
    r.delete(lock.name)


def test_invalid_tag_on_v2_says_why(stack: Stack):
    for tag, why in (("a" * 300, "a tag is at most 128 characters; this one has 300"),
                     ("-dash", "a tag cannot start with '.' or '-'"),
                     ("semi;colon", "a tag holds only letters, digits, '_', '.' and '-'")):
        resp = V2.put(f"{stack.gw_url}/v2/push/taglen/manifests/{tag}", data=b"{}",
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
                      timeout=10)
        assert resp.status_code == 400
        [error] = resp.json()["errors"]
        shown = tag if len(tag) <= 40 else tag[:40] + "..."
        assert (error["code"], error["message"]) == ("TAG_INVALID",
                                                     f"invalid tag {shown!r}: {why}")


def test_scope_refusals_reach_the_user_and_the_audit_trail(stack: Stack, tmp_path: Path):
    from tests.integration.test_attacks import token

    secret = token(stack, "scope-team", "ci", repositories=["scope/team-*"])
    image = oci.simple_image("scope-1")
    layout = oci.write_layout(tmp_path / "scope", {"img": image})
    mine = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/scope/team-a:v1.0.0",
                           creds=f"ci:{secret}")
    assert mine.returncode == 0, mine.stderr
    refused = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/scope/other:v1.0.0",
                              creds=f"ci:{secret}")
    assert refused.returncode != 0
    assert "is not allowed to push 'scope/other'" in refused.stderr, refused.stderr

    session = requests.Session()
    session.auth = ("ci", secret)
    head = session.head(f"{stack.gw_url}/v2/scope/other/manifests/v1.0.0", timeout=10)
    assert head.status_code == 403
    assert head.headers["WWW-Authenticate"] == (
        'Basic realm="tagwarden", error="insufficient_scope", error_description="token '
        f"'{_name(stack, secret)}' is not allowed to pull 'scope/other'\"")
    blob = session.head(f"{stack.gw_url}/v2/scope/other/blobs/{image.layers[0].digest}",
                        timeout=10)
    assert blob.status_code == 404  # a pusher's existence check: it goes on to the upload
    upload = session.post(f"{stack.gw_url}/v2/scope/other/blobs/uploads/", timeout=10)
    assert upload.status_code == 403 and upload.json()["errors"][0]["code"] == "DENIED"

    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit", timeout=10,
                              params={"repository": "scope/other"}).json()["items"]
    assert {(a["action"], a["outcome"], a["status"], a["target"]["method"]) for a in audit} >= {
        ("registry.push", "denied", 403, "POST"), ("registry.pull", "denied", 403, "HEAD")}
    assert all(a["actor"]["name"] == _name(stack, secret) for a in audit)
    assert not [a for a in audit if a["repository"] == "scope/team-a"]


def _name(stack: Stack, secret: str) -> str:
    """The name of the one token test_scope_refusals made."""
    tokens = stack.admin().get(f"{stack.gw_url}/api/v1/tokens", timeout=10).json()["items"]
    return next(t["name"] for t in tokens if t["name"].startswith("scope-team-"))
