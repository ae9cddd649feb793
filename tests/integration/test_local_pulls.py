"""Pulls the gateway answers from the registry's storage (TAGWARDEN_REGISTRY_STORAGE, as
`make run` and docker-compose.yml deploy it): blobs with sendfile, manifests from the
content-addressed cache, each only when *this* repository links the content, and a pull
event recorded for each as the registry would have."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit import oci, procs
from tests.integration.conftest import Stack, start_stack
from tests.integration.test_attacks import ACCEPT, Client, token

SAME = ("Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "Accept-Ranges",
        "Cache-Control", "Docker-Distribution-Api-Version", "Content-Range")


def counter(stack: Stack, name: str) -> float:
    text = requests.get(f"{stack.gw_url}/metrics", timeout=10).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def same_headers(a: requests.Response, b: requests.Response) -> dict[str, tuple]:
    """The headers that differ between two answers (Date and request ids aside)."""
    return {k: (a.headers.get(k), b.headers.get(k)) for k in SAME
            if a.headers.get(k) != b.headers.get(k)}


def registry(stack: Stack, method: str, path: str, **headers: str) -> requests.Response:
    return requests.request(method, stack.reg_url + path, headers={"Accept": ACCEPT, **headers},
                            timeout=20)


def gateway_pulls(stack: Stack, repo: str, digest: str) -> list[dict[str, Any]]:
    resp = stack.admin().get(f"{stack.gw_url}/api/v1/events", timeout=10,
                             params={"repository": repo, "action": "pull", "limit": 200})
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["items"]
            if e.get("source") == "gateway" and e.get("digest") == digest]


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.fixture(scope="module")
def world(stack: Stack) -> dict[str, Any]:
    admin = Client(stack, procs.ADMIN_TOKEN)
    ci = Client(stack, token(stack, "local-ci", "ci", repositories=["team-a/*"],
                             environments=["develop"]))
    run = uuid.uuid4().hex[:8]
    secret_digest, secret_blobs = admin.image(f"secret/local-{run}", "v1.0.0", "secret")
    digest, blobs = ci.image(f"team-a/local-{run}", "v1.0.0", "mine")
    return {"admin": admin, "ci": ci, "repo": f"team-a/local-{run}", "digest": digest,
            "blobs": blobs, "secret_repo": f"secret/local-{run}",
            "secret_digest": secret_digest, "secret_blobs": secret_blobs}


# -- blobs ----------------------------------------------------------------------------------
def test_a_blob_get_is_sent_from_the_storage_as_the_registry_would(stack: Stack, world: dict):
    repo, layer = world["repo"], world["blobs"][1]
    before = counter(stack, "tagwarden_proxy_blob_sendfile_total")
    got = world["ci"].call("GET", f"/v2/{repo}/blobs/{layer}")
    direct = registry(stack, "GET", f"/v2/{repo}/blobs/{layer}")
    assert got.status_code == 200 and direct.status_code == 200
    assert got.content == direct.content
    assert same_headers(got, direct) == {}
    assert counter(stack, "tagwarden_proxy_blob_sendfile_total") == before + 1


@pytest.mark.parametrize("spec", ["bytes=10-19", "bytes=5-", "bytes=-7", "bytes=0-100000"])
def test_a_range_is_answered_206_from_the_storage(stack: Stack, world: dict, spec: str):
    repo, layer = world["repo"], world["blobs"][1]
    before = counter(stack, "tagwarden_proxy_blob_sendfile_total")
    got = world["ci"].call("GET", f"/v2/{repo}/blobs/{layer}", headers={"Range": spec})
    direct = registry(stack, "GET", f"/v2/{repo}/blobs/{layer}", Range=spec)
    assert (got.status_code, direct.status_code) == (206, 206)
    assert got.content == direct.content
    assert got.headers["Content-Range"] == direct.headers["Content-Range"]
    assert same_headers(got, direct) == {}
    assert counter(stack, "tagwarden_proxy_blob_sendfile_total") == before + 1


def test_several_ranges_are_left_to_the_registry(stack: Stack, world: dict):
    repo, layer = world["repo"], world["blobs"][1]
    before = counter(stack, "tagwarden_proxy_blob_sendfile_total")
    got = world["ci"].call("GET", f"/v2/{repo}/blobs/{layer}",
                           headers={"Range": "bytes=0-1,4-5"})
    direct = registry(stack, "GET", f"/v2/{repo}/blobs/{layer}", Range="bytes=0-1,4-5")
    assert got.status_code == direct.status_code == 206
    assert got.headers["Content-Type"].startswith("multipart/byteranges")
    assert counter(stack, "tagwarden_proxy_blob_sendfile_total") == before


def test_another_repositorys_blob_is_404_through_this_one(stack: Stack, world: dict):
    """team-a's token asks for secret's layer through team-a's repository: the blob is in
    the global store, but not linked in team-a/..., so the answer is the registry's 404."""
    secret_layer = world["secret_blobs"][1]
    before = counter(stack, "tagwarden_proxy_blob_sendfile_total")
    for path in (f"/v2/{world['repo']}/blobs/{secret_layer}",
                 f"/v2/team-a/never-pushed/blobs/{secret_layer}"):
        resp = world["ci"].call("GET", path)
        assert resp.status_code == 404, resp.text
        assert resp.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        ranged = world["ci"].call("GET", path, headers={"Range": "bytes=0-3"})
        assert ranged.status_code == 404
    assert world["ci"].call("GET", f"/v2/{world['secret_repo']}/blobs/{secret_layer}"
                            ).status_code == 403
    assert counter(stack, "tagwarden_proxy_blob_sendfile_total") == before


def test_a_deleted_blob_is_404(stack: Stack, world: dict):
    admin, repo = world["admin"], world["repo"]
    blob = admin.blob(repo, f"to be deleted {uuid.uuid4()}".encode())
    assert admin.call("GET", f"/v2/{repo}/blobs/{blob}").status_code == 200
    assert admin.call("DELETE", f"/v2/{repo}/blobs/{blob}").status_code == 202
    gone = admin.call("GET", f"/v2/{repo}/blobs/{blob}")
    assert gone.status_code == 404
    assert gone.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_unreadable_storage_falls_back_to_streaming(tmp_path: Path):
    s = start_stack(tmp_path, worker=False,
                    TAGWARDEN_REGISTRY_STORAGE=str(tmp_path / "not-the-storage"))
    try:
        client = Client(s, procs.ADMIN_TOKEN)
        data = f"streamed {uuid.uuid4()}".encode() * 1000
        blob = client.blob("team/stream", data)
        got = client.call("GET", f"/v2/team/stream/blobs/{blob}")
        assert got.status_code == 200 and got.content == data
        part = client.call("GET", f"/v2/team/stream/blobs/{blob}",
                           headers={"Range": "bytes=3-9"})
        assert part.status_code == 206 and part.content == data[3:10]
        assert counter(s, "tagwarden_proxy_blob_sendfile_total") == 0
    finally:
        s.stop()


def _both_ways(stack: Stack, client: Client, repo: str, data: bytes) -> None:
    """A whole blob (several chunks and a short last one) and ranges, each as the registry
    answers it."""
    blob = client.blob(repo, data)
    for spec in (None, "bytes=0-0", "bytes=3-9", f"bytes={len(data) - 5}-",
                 "bytes=-1048577", "bytes=1048575-1048577"):
        headers = {"Range": spec} if spec else {}
        got = client.call("GET", f"/v2/{repo}/blobs/{blob}", headers=headers)
        direct = registry(stack, "GET", f"/v2/{repo}/blobs/{blob}", **headers)
        assert (got.status_code, got.content) == (direct.status_code, direct.content), spec
        assert same_headers(got, direct) == {}, spec


@pytest.mark.parametrize("mode", ["auto", "copy", "sendfile"])
def test_a_blob_is_copied_to_a_local_peer_and_sent_with_sendfile_otherwise(
        tmp_path: Path, mode: str):
    """TAGWARDEN_BLOB_SEND: `auto` copies to a loopback peer (every test client is one),
    `copy` always, `sendfile` never; the bytes and headers are the registry's either way."""
    s = start_stack(tmp_path, worker=False, TAGWARDEN_BLOB_SEND=mode)
    try:
        client = Client(s, procs.ADMIN_TOKEN)
        data = (uuid.uuid4().bytes * 65536)[: 2 * 1024 * 1024 + 12345]  # 1 MiB chunks + a rest
        _both_ways(s, client, "team/send", data)
        sent = counter(s, "tagwarden_proxy_blob_sendfile_total")
        copied = counter(s, "tagwarden_proxy_blob_copied_total")
        assert sent == 6
        assert copied == (0 if mode == "sendfile" else 6)
    finally:
        s.stop()


# -- manifests ------------------------------------------------------------------------------
def test_a_cached_manifest_is_the_registrys_answer(stack: Stack, world: dict):
    ci, repo, digest = world["ci"], world["repo"], world["digest"]
    for ref in ("v1.0.0", digest):
        path = f"/v2/{repo}/manifests/{ref}"
        first = ci.call("GET", path, headers={"Accept": ACCEPT})  # fills the cache
        hits = counter(stack, "tagwarden_manifest_cache_hits_total")
        again = ci.call("GET", path, headers={"Accept": ACCEPT})
        head = ci.call("HEAD", path, headers={"Accept": ACCEPT})
        assert counter(stack, "tagwarden_manifest_cache_hits_total") >= hits + 2
        direct = registry(stack, "GET", path)
        for resp in (first, again):
            assert resp.status_code == 200
            assert resp.content == direct.content
            assert resp.headers["Docker-Content-Digest"] == digest
            assert same_headers(resp, direct) == {}
        assert head.status_code == 200 and head.content == b""
        assert same_headers(head, registry(stack, "HEAD", path)) == {}


def test_a_manifest_not_linked_in_this_repository_is_404(stack: Stack, world: dict):
    admin, ci = world["admin"], world["ci"]
    secret = world["secret_digest"]
    # cached through its own repository first
    for _ in range(2):
        assert admin.call("GET", f"/v2/{world['secret_repo']}/manifests/{secret}",
                          headers={"Accept": ACCEPT}).status_code == 200
    for method in ("GET", "HEAD"):
        resp = ci.call(method, f"/v2/{world['repo']}/manifests/{secret}",
                       headers={"Accept": ACCEPT})
        assert resp.status_code == 404
        if method == "GET":
            assert resp.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


def test_a_manifest_deleted_through_the_gateway_is_gone(stack: Stack, world: dict):
    admin = world["admin"]
    repo = f"team-a/deleted-{uuid.uuid4().hex[:6]}"
    digest, _ = admin.image(repo, "build-1", "deleted")
    for ref in ("build-1", digest):
        for _ in range(2):
            assert admin.call("GET", f"/v2/{repo}/manifests/{ref}",
                              headers={"Accept": ACCEPT}).status_code == 200
    assert admin.call("DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    for ref in ("build-1", digest):
        for method in ("GET", "HEAD"):
            resp = admin.call(method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
            assert resp.status_code == 404, (ref, method)


def test_a_manifest_deleted_behind_the_gateway_is_gone(stack: Stack, world: dict):
    admin = world["admin"]
    repo = f"team-a/behind-{uuid.uuid4().hex[:6]}"
    digest, _ = admin.image(repo, "build-1", "behind")
    for _ in range(2):
        assert admin.call("GET", f"/v2/{repo}/manifests/{digest}",
                          headers={"Accept": ACCEPT}).status_code == 200
    assert registry(stack, "DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert admin.call("GET", f"/v2/{repo}/manifests/{digest}",
                      headers={"Accept": ACCEPT}).status_code == 404


def test_an_accept_without_the_stored_type_is_the_registrys_answer(stack: Stack, world: dict):
    ci, repo = world["ci"], world["repo"]
    path = f"/v2/{repo}/manifests/{world['digest']}"
    ci.call("GET", path, headers={"Accept": ACCEPT})
    only_docker = {"Accept": oci.DOCKER_MANIFEST}
    got = ci.call("GET", path, headers=only_docker)
    direct = registry(stack, "GET", path, Accept=oci.DOCKER_MANIFEST)
    assert got.status_code == direct.status_code == 404  # an OCI manifest, not accepted


def test_pulls_answered_by_the_gateway_are_recorded_once_each(stack: Stack, world: dict):
    ci, repo, digest, layer = world["ci"], world["repo"], world["digest"], world["blobs"][1]
    path = f"/v2/{repo}/manifests/v1.0.0"
    ci.call("GET", path, headers={"Accept": ACCEPT})  # cached (maybe by an earlier test)
    before_m = len(gateway_pulls(stack, repo, digest))
    before_b = len(gateway_pulls(stack, repo, layer))
    hits = counter(stack, "tagwarden_manifest_cache_hits_total")
    for method in ("GET", "HEAD", "GET"):
        assert ci.call(method, path, headers={"Accept": ACCEPT}).status_code == 200
    assert counter(stack, "tagwarden_manifest_cache_hits_total") == hits + 3
    assert ci.call("GET", f"/v2/{repo}/blobs/{layer}").status_code == 200
    manifests = wait_for(lambda: len(gateway_pulls(stack, repo, digest)) >= before_m + 3
                         and gateway_pulls(stack, repo, digest))
    blobs = wait_for(lambda: len(gateway_pulls(stack, repo, layer)) >= before_b + 1
                     and gateway_pulls(stack, repo, layer))
    assert len(manifests) == before_m + 3
    assert len(blobs) == before_b + 1
    newest = manifests[:3]
    assert sorted(e["request"]["method"] for e in newest) == ["GET", "GET", "HEAD"]
    assert {(e["tag"], e["media_type"], e["actor"].startswith("local-ci")) for e in newest} == {
        ("v1.0.0", oci.OCI_MANIFEST, True)}
    assert (blobs[0]["media_type"], blobs[0]["tag"]) == ("application/octet-stream", None)


def test_pulls_never_see_the_registrys_link_rewrites(stack: Stack, world: dict):
    """distribution's filesystem driver rewrites link files in place (truncate, write): while
    anything re-puts a manifest or re-uploads a blob, a read of the same digest can find the
    link empty, and the registry answers 500 "invalid checksum digest format" (every
    promotion re-puts its manifest). Pulls through the gateway never show it: an empty link
    sends the gateway to the registry, and a read the registry answers 500 is asked again.
    The writers here go to the registry directly, as fast as it takes them; a direct reader
    in the same loop proves the race was live."""
    admin, repo, digest = world["admin"], world["repo"], world["digest"]
    manifest = admin.call("GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": ACCEPT})
    layer = world["blobs"][1]
    layer_bytes = admin.call("GET", f"/v2/{repo}/blobs/{layer}").content
    stop = time.monotonic() + 8
    failures: list[tuple[str, int]] = []
    counts = {"gateway": 0, "direct 500": 0}

    def rewrite() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            session.put(f"{stack.reg_url}/v2/{repo}/manifests/race-{uuid.uuid4().hex[:6]}",
                        data=manifest.content, timeout=20,
                        headers={"Content-Type": oci.OCI_MANIFEST})
            start = session.post(f"{stack.reg_url}/v2/{repo}/blobs/uploads/", timeout=20)
            loc = start.headers["Location"]
            loc = loc if loc.startswith("http") else stack.reg_url + loc
            session.put(f"{loc}{'&' if '?' in loc else '?'}digest={layer}", data=layer_bytes,
                        timeout=20, headers={"Content-Type": "application/octet-stream"})

    def pull() -> None:
        client = Client(stack, procs.ADMIN_TOKEN)
        while time.monotonic() < stop:
            for method, path in (("GET", f"/v2/{repo}/manifests/v1.0.0"),
                                 ("HEAD", f"/v2/{repo}/manifests/v1.0.0"),
                                 ("GET", f"/v2/{repo}/manifests/{digest}"),
                                 ("GET", f"/v2/{repo}/blobs/{layer}")):
                got = client.call(method, path, headers={"Accept": ACCEPT})
                counts["gateway"] += 1
                if got.status_code != 200:
                    failures.append((f"{method} {path}", got.status_code))

    def direct() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            got = session.get(f"{stack.reg_url}/v2/{repo}/manifests/v1.0.0",
                              headers={"Accept": ACCEPT}, timeout=20)
            counts["direct 500"] += got.status_code == 500

    threads = [threading.Thread(target=t) for t in (rewrite, rewrite, pull, pull, pull, direct)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts["direct 500"] > 0, "the registry never raced: the test proves nothing"
    assert counts["gateway"] > 100
    assert failures == [], failures[:10]


# -- promotions read their source like a cached pull ----------------------------------------
def _promote(stack: Stack, secret: str, repo: str, digest: str) -> requests.Response:
    return requests.post(f"{stack.gw_url}/api/v1/promotions", timeout=20, json={
        "repository": repo, "environment": "develop", "digest": digest},
        headers={"Authorization": f"Bearer {secret}"})


def test_a_promotion_never_takes_its_source_from_the_cache_of_another_repository(
        stack: Stack, world: dict):
    """Another team's manifest, cached by its own pulls, named as the source of a promotion
    into this team's repository: 404, and the registry is asked for nothing of it (its
    develop tag is never written). The same promotion of this repository's own manifest
    works."""
    admin, secret = world["admin"], world["secret_digest"]
    for _ in range(4):  # cached in every gateway process
        assert admin.call("GET", f"/v2/{world['secret_repo']}/manifests/{secret}",
                          headers={"Accept": ACCEPT}).status_code == 200
    ci = token(stack, "local-promoter", "ci", repositories=["team-a/*"],
               environments=["develop"])
    repo = f"team-a/promo-{uuid.uuid4().hex[:6]}"
    own, _ = Client(stack, ci).image(repo, "v1.0.0", "promo")
    refused = _promote(stack, ci, repo, secret)
    assert refused.status_code == 404, refused.text
    assert registry(stack, "HEAD", f"/v2/{repo}/manifests/develop").status_code == 404
    done = _promote(stack, ci, repo, own)
    assert done.status_code == 201, done.text
    assert registry(stack, "HEAD", f"/v2/{repo}/manifests/develop").headers[
        "Docker-Content-Digest"] == own


def test_a_promotion_of_a_manifest_deleted_behind_the_gateway_is_404(stack: Stack,
                                                                     world: dict):
    """Cached by pulls, then deleted at the registry directly: the link file is gone, so the
    promotion asks the registry, which says it is unknown; nothing is written."""
    admin = world["admin"]
    repo = f"team-a/promo-gone-{uuid.uuid4().hex[:6]}"
    digest, _ = admin.image(repo, "v1.0.0", "promo-gone")
    for _ in range(4):
        assert admin.call("GET", f"/v2/{repo}/manifests/{digest}",
                          headers={"Accept": ACCEPT}).status_code == 200
    assert registry(stack, "DELETE", f"/v2/{repo}/manifests/{digest}").status_code == 202
    gone = _promote(stack, procs.ADMIN_TOKEN, repo, digest)
    assert gone.status_code == 404, gone.text
    assert registry(stack, "HEAD", f"/v2/{repo}/manifests/develop").status_code == 404
    history = stack.admin().get(f"{stack.gw_url}/api/v1/promotions", timeout=10, params={
        "repository": repo, "environment": "develop"})
    assert history.status_code == 404 and "no promotions" in history.text, history.text
