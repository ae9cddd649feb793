"""Issue 14: what the registry will *do* with a request is what gets authorized.

Each test replays an attack a `ci` token scoped to `team-a/*` made work against the real
stack (real redis-server, docker-registry, gunicorn gateway and RQ worker), with its variants,
and checks the registry's own state afterwards (asked directly, not through the gateway).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from testkit import oci, procs
from tests.integration.conftest import Stack

ACCEPT = ", ".join([oci.OCI_MANIFEST, oci.OCI_INDEX, oci.DOCKER_MANIFEST])
POLICY = {"name": "attacks", "repositories": ["team-a/*", "secret/vault"],
          "push": {"allow": ["semver", "git-sha", "other"], "immutable": ["semver"]},
          "promotion": {"develop": {}, "staging": {"from": "develop"},
                        "production": {"from": "staging"}},
          "scan_on_push": False}
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("condition not reached")


class Client:
    """A /v2 client with one token (Basic, as `docker login` sends it)."""

    def __init__(self, stack: Stack, secret: str) -> None:
        self.base = stack.gw_url
        self.session = requests.Session()
        self.session.auth = ("user", secret)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 20)
        return self.session.request(method, self.base + path, allow_redirects=False, **kwargs)

    def blob(self, repo: str, data: bytes) -> str:
        digest = sha(data)
        start = self.call("POST", f"/v2/{repo}/blobs/uploads/")
        assert start.status_code == 202, start.text
        loc = start.headers["Location"]
        sep = "&" if "?" in loc else "?"
        done = self.session.put(f"{loc}{sep}digest={digest}", data=data, timeout=20,
                                headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        return digest

    def image(self, repo: str, ref: str, seed: str) -> tuple[str, list[str]]:
        """Push a one-layer OCI image; (manifest digest, [config, layer] digests)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        layer = f"layer {seed} {uuid.uuid4()}".encode()
        blobs = [self.blob(repo, config), self.blob(repo, layer)]
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
            "config": {"mediaType": oci.OCI_CONFIG, "digest": blobs[0], "size": len(config)},
            "layers": [{"mediaType": oci.OCI_LAYER, "digest": blobs[1], "size": len(layer)}],
        }).encode()
        status = self.put_manifest(repo, ref, manifest, oci.OCI_MANIFEST)
        assert status.status_code == 201, status.text
        return sha(manifest), blobs

    def index(self, repo: str, ref: str, children: list[str]) -> str:
        body = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
            {"mediaType": oci.OCI_MANIFEST, "digest": d, "size": self.size(repo, d),
             "platform": {"architecture": f"arch{i}", "os": "linux"}}
            for i, d in enumerate(children)]}).encode()
        resp = self.put_manifest(repo, ref, body, oci.OCI_INDEX)
        assert resp.status_code == 201, resp.text
        return sha(body)

    def size(self, repo: str, digest: str) -> int:
        return int(self.call("HEAD", f"/v2/{repo}/manifests/{digest}",
                             headers={"Accept": ACCEPT}).headers["Content-Length"])

    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str
                     ) -> requests.Response:
        return self.call("PUT", f"/v2/{repo}/manifests/{ref}", data=body,
                         headers={"Content-Type": media_type})


def registry(stack: Stack, method: str, path: str, **kwargs: Any) -> requests.Response:
    """The registry itself, behind the gateway: what it holds, whatever the gateway says."""
    headers = {"Accept": ACCEPT, **kwargs.pop("headers", {})}
    return requests.request(method, f"{stack.reg_url}{path}", headers=headers, timeout=20,
                            **kwargs)


def token(stack: Stack, name: str, role: str, **scope: Any) -> str:
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/tokens",
                              json={"name": f"{name}-{uuid.uuid4().hex[:6]}", "role": role,
                                    **scope}, timeout=10)
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def promote(stack: Stack, repo: str, digest: str, *envs: str) -> None:
    for env in envs:
        resp = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", timeout=30,
                                  json={"repository": repo, "environment": env,
                                        "digest": digest})
        assert resp.status_code == 201, resp.text


def denied_rule(resp: requests.Response) -> str:
    assert resp.status_code == 403, resp.text
    error = resp.json()["errors"][0]
    assert error["code"] == "DENIED"
    return ",".join(v["rule"] for v in (error.get("detail") or {}).get("violations", []))


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, Any]:
    """The policy, an admin, a team-a ci token, and a secret image team-a must never read."""
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/attacks", json=POLICY,
                             timeout=10)
    assert resp.status_code == 200, resp.text
    admin = Client(stack, procs.ADMIN_TOKEN)
    ci = Client(stack, token(stack, "team-a-ci", "ci", repositories=["team-a/*"],
                             environments=["develop", "staging"]))
    secret_digest, secret_blobs = admin.image("secret/vault", "v1.0.0", "secret")
    return {"admin": admin, "ci": ci, "secret_blobs": secret_blobs,
            "secret_digest": secret_digest}


def linked(stack: Stack, repo: str, blob: str) -> int:
    return registry(stack, "HEAD", f"/v2/{repo}/blobs/{blob}").status_code


# -- 1. cross-repository mounts -------------------------------------------------------------
@pytest.mark.parametrize("variant", ["form", "multipart", "body-from-over-allowed-query",
                                     "duplicate-from", "semicolon"])
def test_a_mount_source_is_what_was_authorized(stack: Stack, world: dict, variant: str):
    """distribution reads `mount`/`from` with FormValue: a form body, a duplicated or
    smuggled `from` must never mount a blob of a repository the token cannot pull."""
    ci: Client = world["ci"]
    secret_layer = world["secret_blobs"][1]
    target = f"team-a/mount-{variant}"
    ci.blob("team-a/allowed", b"an allowed blob " + variant.encode())
    if variant == "form":
        resp = ci.call("POST", f"/v2/{target}/blobs/uploads/",
                       data=f"mount={secret_layer}&from=secret/vault",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    elif variant == "multipart":
        resp = ci.call("POST", f"/v2/{target}/blobs/uploads/",
                       files={"mount": (None, secret_layer), "from": (None, "secret/vault")})
    elif variant == "body-from-over-allowed-query":
        resp = ci.call("POST", f"/v2/{target}/blobs/uploads/?mount={secret_layer}"
                       "&from=team-a/allowed", data="from=secret/vault",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    elif variant == "duplicate-from":
        resp = ci.call("POST", f"/v2/{target}/blobs/uploads/?mount={secret_layer}"
                       "&from=team-a/allowed&from=secret/vault")
    else:
        resp = ci.call("POST", f"/v2/{target}/blobs/uploads/?mount={secret_layer}"
                       ";from=secret/vault")
    assert resp.status_code == 202, resp.text  # an ordinary upload session, nothing mounted
    assert linked(stack, target, secret_layer) == 404
    assert ci.call("GET", f"/v2/{target}/blobs/{secret_layer}").status_code == 404


def test_a_mount_from_a_repository_out_of_scope_is_refused_and_audited(stack: Stack,
                                                                       world: dict):
    ci, admin = world["ci"], world["admin"]
    secret_layer = world["secret_blobs"][1]
    for query in (f"mount={secret_layer}&from=secret/vault",
                  f"mount={secret_layer}&fr%6Fm=secret%2Fapp"):
        resp = ci.call("POST", f"/v2/team-a/m2/blobs/uploads/?{query}")
        assert resp.status_code == 403, resp.text
        assert linked(stack, "team-a/m2", secret_layer) == 404
    # an allowed mount works and is audited with its source
    own = ci.blob("team-a/source", b"team-a's own layer")
    resp = ci.call("POST", f"/v2/team-a/m2/blobs/uploads/?mount={own}&from=team-a/source")
    assert resp.status_code == 201, resp.text
    assert linked(stack, "team-a/m2", own) == 200
    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit",
                              params={"action": "blob.mount", "repository": "team-a/m2"},
                              timeout=10).json()["items"]
    assert [(a["target"]["from"], a["target"]["digest"], a["outcome"]) for a in audit] == [
        ("team-a/source", own, "success")]
    assert admin.call("GET", f"/v2/team-a/m2/blobs/{own}").status_code == 200


def test_forwarded_headers_from_a_client_do_not_steer_the_registry(stack: Stack, world: dict):
    """The registry builds Location from `Forwarded` first: a client's must not reach it."""
    resp = world["ci"].call("POST", "/v2/team-a/fwd/blobs/uploads/",
                            headers={"Forwarded": "host=evil.example;proto=https"})
    assert resp.status_code == 202
    assert resp.headers["Location"].startswith(stack.gw_url + "/v2/team-a/fwd/blobs/uploads/")


# -- 2. deletes that break production ----------------------------------------------------------
def test_a_ci_token_cannot_delete_blobs(stack: Stack, world: dict):
    ci, admin = world["ci"], world["admin"]
    digest, blobs = ci.image("team-a/prod", "v1.0.0", "prod")
    promote(stack, "team-a/prod", digest, "develop", "staging", "production")
    for blob in blobs + [ci.blob("team-a/prod", b"unused blob")]:
        resp = ci.call("DELETE", f"/v2/team-a/prod/blobs/{blob}")
        assert resp.status_code == 403, resp.text
        assert resp.json()["errors"][0]["code"] == "DENIED"
        assert linked(stack, "team-a/prod", blob) == 200
    # an admin may delete blobs, but never one production needs
    for blob in blobs:
        assert "delete.in_use" in denied_rule(admin.call("DELETE",
                                                         f"/v2/team-a/prod/blobs/{blob}"))
        assert linked(stack, "team-a/prod", blob) == 200
    unused = ci.blob("team-a/prod", b"really unused")
    assert admin.call("DELETE", f"/v2/team-a/prod/blobs/{unused}").status_code == 202
    assert linked(stack, "team-a/prod", unused) == 404


def test_children_of_a_protected_index_stay(stack: Stack, world: dict):
    ci: Client = world["ci"]
    amd, _ = ci.image("team-a/multi", "sha-aaaaaaa", "amd")
    arm, arm_blobs = ci.image("team-a/multi", "sha-bbbbbbb", "arm")
    index = ci.index("team-a/multi", "build-1", [amd, arm])
    promote(stack, "team-a/multi", index, "develop")
    for child in (amd, arm):
        resp = ci.call("DELETE", f"/v2/team-a/multi/manifests/{child}")
        rule = denied_rule(resp)
        assert rule == "delete.in_use"
        assert index in resp.json()["errors"][0]["message"]
        assert registry(stack, "HEAD", f"/v2/team-a/multi/manifests/{child}").status_code == 200
    resp = world["admin"].call("DELETE", f"/v2/team-a/multi/blobs/{arm_blobs[1]}")
    assert denied_rule(resp) == "delete.in_use"
    # an index released under an immutable tag protects its children the same way
    other, _ = ci.image("team-a/multi2", "sha-ccccccc", "other")
    ci.index("team-a/multi2", "v3.0.0", [other])
    assert denied_rule(ci.call("DELETE", f"/v2/team-a/multi2/manifests/{other}")) \
        == "delete.in_use"
    # an unprotected child can go
    loose, _ = ci.image("team-a/multi3", "sha-ddddddd", "loose")
    ci.index("team-a/multi3", "build-2", [loose])
    assert ci.call("DELETE", f"/v2/team-a/multi3/manifests/{loose}").status_code == 202


# -- 3. immutable tags stay bound --------------------------------------------------------------
def test_an_immutable_tag_cannot_be_deleted_or_re_pointed(stack: Stack, world: dict):
    ci, admin = world["ci"], world["admin"]
    first, _ = ci.image("team-a/rel", "v5.0.0", "first")
    for who in (ci, admin):
        assert denied_rule(who.call("DELETE", f"/v2/team-a/rel/manifests/{first}")) \
            == "delete.in_use"
    assert registry(stack, "HEAD", "/v2/team-a/rel/manifests/v5.0.0").status_code == 200
    # the registry loses the manifest behind the gateway's back (or retention deletes it)
    assert registry(stack, "DELETE", f"/v2/team-a/rel/manifests/{first}").status_code == 202
    wait_for(lambda: [e for e in events(stack, repository="team-a/rel", action="delete")
                      if e.get("tag") == "v5.0.0"])
    wait_drained(stack)
    # re-pushing the tag with other content is still refused: the binding outlives it
    resp = push_other(ci, "team-a/rel", "v5.0.0", "second")
    assert denied_rule(resp) == "push.immutable"
    assert registry(stack, "HEAD", "/v2/team-a/rel/manifests/v5.0.0").status_code == 404
    listed = stack.admin().get(f"{stack.gw_url}/api/v1/tag-bindings",
                               params={"repository": "team-a/rel"}, timeout=10)
    assert listed.status_code == 200
    assert [(b["tag"], b["digest"]) for b in listed.json()["items"]] == [("v5.0.0", first)]


def test_only_an_admin_releases_a_binding_with_a_reason(stack: Stack, world: dict):
    ci = world["ci"]
    first, _ = ci.image("team-a/rel2", "v6.0.0", "first")
    assert registry(stack, "DELETE", f"/v2/team-a/rel2/manifests/{first}").status_code == 202
    url = f"{stack.gw_url}/api/v1/tag-bindings"
    query = {"repository": "team-a/rel2", "tag": "v6.0.0"}
    ci_bearer = {"Authorization": f"Bearer {ci.session.auth[1]}"}
    assert requests.delete(url, params=query, json={"reason": "mine"}, headers=ci_bearer,
                           timeout=10).status_code == 403
    no_reason = stack.admin().delete(url, params=query, json={}, timeout=10)
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["errors"]
    assert stack.admin().delete(url, params={**query, "tag": "v9.9.9"},
                                json={"reason": "x"}, timeout=10).status_code == 404
    other_admin = token(stack, "team-b-admin", "admin", repositories=["team-b/*"])
    other_reader = token(stack, "team-b-reader", "reader", repositories=["team-b/*"])
    assert requests.delete(url, params=query, json={"reason": "not mine"}, timeout=10,
                           headers={"Authorization": f"Bearer {other_admin}"}
                           ).status_code == 403  # another team's admin
    assert requests.get(url, params={"repository": "team-a/rel2"}, timeout=10,
                        headers={"Authorization": f"Bearer {other_reader}"}
                        ).status_code == 403
    forged = stack.admin().delete(url, params=query, json={"reason": "x", "digest": "sha256:"
                                                           + "0" * 64}, timeout=10)
    assert forged.status_code == 422 and "digest" in forged.json()["errors"]
    huge = stack.admin().delete(url, params=query, json={"reason": "x" * 501}, timeout=10)
    assert huge.status_code == 422 and "reason" in huge.json()["errors"]
    released = stack.admin().delete(url, params=query, json={"reason": "bad build"},
                                    timeout=10)
    assert released.status_code == 200, released.text
    replayed = stack.admin().delete(url, params=query, json={"reason": "bad build"},
                                    timeout=10)
    assert replayed.status_code == 404  # released once; a replay changes nothing
    assert released.json()["digest"] == first
    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit", timeout=10,
                              params={"action": "tag_binding.release"}).json()["items"]
    assert audit[0]["target"]["tag"] == "v6.0.0"
    assert audit[0]["target"]["reason"] == "bad build"
    wait_drained(stack)
    assert push_other(ci, "team-a/rel2", "v6.0.0", "second").status_code == 201


def push_other(client: Client, repo: str, tag: str, seed: str) -> requests.Response:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    digest = client.blob(repo, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "config": {
        "mediaType": oci.OCI_CONFIG, "digest": digest, "size": len(config)},
        "layers": []}).encode()
    return client.put_manifest(repo, tag, manifest, oci.OCI_MANIFEST)


# -- 5. registry events are checked against the registry ---------------------------------------
def events(stack: Stack, **params: str) -> list[dict]:
    resp = stack.admin().get(f"{stack.gw_url}/api/v1/events", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def send_events(stack: Stack, *events_: dict) -> None:
    resp = requests.post(f"{stack.gw_url}/api/v1/webhooks/registry",
                         data=json.dumps({"events": list(events_)}), timeout=10,
                         headers={"Authorization": f"Bearer {procs.WEBHOOK_TOKEN}",
                                  "Content-Type": EVENTS_TYPE})
    assert resp.status_code == 200, resp.text


def wait_drained(stack: Stack) -> None:
    """Every event sent so far has been processed: the one worker handles the inbox in
    order, so a sentinel sent last is recorded only after the others were processed."""
    sentinel = {"id": str(uuid.uuid4()), "action": "delete",
                "timestamp": "2026-12-01T00:00:00Z",
                "target": {"repository": "sentinel/none", "tag": uuid.uuid4().hex[:12]}}
    send_events(stack, sentinel)
    wait_for(lambda: [e for e in events(stack, repository="sentinel/none")
                      if e["id"] == sentinel["id"]])


def forged(action: str, repo: str, **target: str) -> dict:
    return {"id": str(uuid.uuid4()), "action": action, "timestamp": "2026-12-01T00:00:00Z",
            "target": {"repository": repo, "mediaType": oci.OCI_MANIFEST, **target},
            "request": {"addr": "10.0.0.9", "method": "DELETE"}, "actor": {}}


def test_forged_registry_events_change_nothing(stack: Stack, world: dict):
    ci = world["ci"]
    release, _ = ci.image("team-a/forged", "v7.0.0", "release")
    feature, _ = ci.image("team-a/forged", "feature", "feature")
    tag_map = stack.redis_client().hgetall("tw:tags:team-a/forged")
    assert tag_map == {"v7.0.0": release, "feature": feature}
    fake = "sha256:" + "e" * 64
    send_events(stack,
                forged("delete", "team-a/forged", tag="v7.0.0"),
                forged("delete", "team-a/forged", digest=release),
                forged("delete", "team-a/forged", tag="feature"),
                forged("push", "team-a/forged", tag="feature", digest=fake),
                forged("push", "team-a/forged", tag="planted", digest=fake))
    wait_drained(stack)
    assert stack.redis_client().hgetall("tw:tags:team-a/forged") == tag_map
    assert denied_rule(push_other(ci, "team-a/forged", "v7.0.0", "other")) == "push.immutable"
    assert registry(stack, "HEAD", "/v2/team-a/forged/manifests/v7.0.0").headers[
        "Docker-Content-Digest"] == release
