"""The /v2 proxy with real skopeo, a real registry and the gateway under gunicorn."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from testkit import oci
from tests.integration.conftest import V2, Stack

CHUNK = 1024 * 1024


def _push(stack: Stack, tmp_path: Path, images: dict, ref: str, dest: str, all_: bool = False):
    layout = oci.write_layout(tmp_path / "layout", images)
    result = oci.skopeo_copy(f"oci:{layout}:{ref}", f"docker://{stack.gw}/{dest}",
                             all_platforms=all_)
    assert result.returncode == 0, result.stderr
    return layout


def test_push_and_pull_multilayer_image_digests_match_direct(stack: Stack, tmp_path: Path):
    image = oci.simple_image("proxy-multilayer", nlayers=3)
    _push(stack, tmp_path, {"v1": image}, "v1", "team/app:v1.0.0")

    via_gateway = oci.skopeo_inspect_raw(f"docker://{stack.gw}/team/app:v1.0.0")
    direct = oci.skopeo_inspect_raw(f"docker://{stack.reg}/team/app:v1.0.0")
    assert via_gateway == direct == image.manifest_bytes()
    assert oci.sha256_digest(via_gateway) == image.digest

    out = tmp_path / "pulled"
    pulled = oci.skopeo_copy(f"docker://{stack.gw}/team/app:v1.0.0", f"oci:{out}:v1")
    assert pulled.returncode == 0, pulled.stderr
    assert oci.skopeo_inspect_raw(f"oci:{out}:v1") == image.manifest_bytes()
    for layer in image.layers:
        blob = out / "blobs" / "sha256" / layer.digest.split(":")[1]
        assert blob.read_bytes() == layer.data


def test_multi_arch_index_round_trips(stack: Stack, tmp_path: Path):
    amd = oci.simple_image("proxy-index-amd")
    arm = oci.Image(layers=oci.simple_image("proxy-index-arm").layers, architecture="arm64")
    _push(stack, tmp_path, {"multi": [amd, arm]}, "multi", "team/multi:v2.0.0", all_=True)

    expected = oci.index_bytes([amd, arm])
    assert oci.skopeo_inspect_raw(f"docker://{stack.gw}/team/multi:v2.0.0") == expected
    assert oci.skopeo_inspect_raw(f"docker://{stack.reg}/team/multi:v2.0.0") == expected
    out = tmp_path / "pulled"
    pulled = oci.skopeo_copy(f"docker://{stack.gw}/team/multi:v2.0.0", f"oci:{out}:m",
                             all_platforms=True)
    assert pulled.returncode == 0, pulled.stderr
    assert oci.skopeo_digest(f"oci:{out}:m") == oci.index_digest([amd, arm])
    child = V2.get(f"{stack.gw_url}/v2/team/multi/manifests/{arm.digest}",
                         headers={"Accept": oci.OCI_MANIFEST}, timeout=10)
    assert child.status_code == 200
    assert child.headers["Docker-Content-Digest"] == arm.digest
    assert child.content == arm.manifest_bytes()


def _start_upload(stack: Stack, repo: str) -> str:
    resp = V2.post(f"{stack.gw_url}/v2/{repo}/blobs/uploads/", timeout=10)
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]
    assert location.startswith(stack.gw_url + "/v2/"), location
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert resp.headers["Content-Length"] == "0"
    return location


def test_chunked_upload_with_patch_then_put(stack: Stack):
    data = os.urandom(3 * CHUNK + 12345)
    digest = oci.sha256_digest(data)
    location = _start_upload(stack, "team/chunked")
    for start in range(0, len(data), 2 * CHUNK):
        part = data[start : start + 2 * CHUNK]
        resp = V2.patch(location, data=iter([part[:CHUNK], part[CHUNK:]]),
                              headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert resp.status_code == 202, resp.text
        location = resp.headers["Location"]
        assert location.startswith(stack.gw_url)
    sep = "&" if "?" in location else "?"
    resp = V2.put(f"{location}{sep}digest={digest}", timeout=30)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Location"].startswith(stack.gw_url)
    direct = V2.get(f"{stack.reg_url}/v2/team/chunked/blobs/{digest}", timeout=30)
    assert direct.content == data


def test_monolithic_put_upload_with_content_length(stack: Stack):
    data = os.urandom(CHUNK + 7)
    digest = oci.sha256_digest(data)
    location = _start_upload(stack, "team/mono")
    resp = V2.put(f"{location}&digest={digest}", data=data,
                        headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert resp.status_code == 201, resp.text
    wrong = _start_upload(stack, "team/mono")
    bad = V2.put(f"{wrong}&digest=sha256:{'0' * 64}", data=b"xyz", timeout=30)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_head_and_range_on_blobs(stack: Stack, tmp_path: Path):
    image = oci.simple_image("proxy-range")
    _push(stack, tmp_path, {"r": image}, "r", "team/range:v1.0.0")
    layer = image.layers[0]
    url = f"{stack.gw_url}/v2/team/range/blobs/{layer.digest}"
    head = V2.head(url, timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(layer.size)
    assert head.headers["Docker-Content-Digest"] == layer.digest
    assert head.content == b""
    part = V2.get(url, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206
    assert part.content == layer.data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{layer.size}"
    missing = V2.get(f"{stack.gw_url}/v2/team/range/blobs/sha256:{'1' * 64}", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_cross_repository_mount(stack: Stack, tmp_path: Path):
    image = oci.simple_image("proxy-mount")
    _push(stack, tmp_path, {"m": image}, "m", "team/source:v1.0.0")
    layer = image.layers[1]
    resp = V2.post(
        f"{stack.gw_url}/v2/team/target/blobs/uploads/?mount={layer.digest}&from=team/source",
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == f"{stack.gw_url}/v2/team/target/blobs/{layer.digest}"
    got = V2.get(f"{stack.reg_url}/v2/team/target/blobs/{layer.digest}", timeout=10)
    assert hashlib.sha256(got.content).hexdigest() == layer.digest.split(":")[1]


def test_tags_list_sorted_and_paginated(stack: Stack, tmp_path: Path):
    image = oci.simple_image("proxy-tags")
    _push(stack, tmp_path, {"t": image}, "t", "team/tags:v1.0.0")
    for tag in ("v1.2.0", "a-first", "v1.1.0", "zz-last"):
        resp = V2.put(f"{stack.gw_url}/v2/team/tags/manifests/{tag}",
                            data=image.manifest_bytes(),
                            headers={"Content-Type": oci.OCI_MANIFEST}, timeout=10)
        assert resp.status_code == 201, resp.text
    everything = V2.get(f"{stack.gw_url}/v2/team/tags/tags/list", timeout=10)
    assert everything.json() == {
        "name": "team/tags", "tags": ["a-first", "v1.0.0", "v1.1.0", "v1.2.0", "zz-last"]
    }
    assert "Link" not in everything.headers
    first = V2.get(f"{stack.gw_url}/v2/team/tags/tags/list?n=2", timeout=10)
    assert first.json()["tags"] == ["a-first", "v1.0.0"]
    assert first.headers["Link"] == '</v2/team/tags/tags/list?n=2&last=v1.0.0>; rel="next"'
    second = V2.get(stack.gw_url + first.headers["Link"][1:].split(">")[0], timeout=10)
    assert second.json()["tags"] == ["v1.1.0", "v1.2.0"]
    third = V2.get(f"{stack.gw_url}/v2/team/tags/tags/list?n=2&last=v1.2.0", timeout=10)
    assert third.json()["tags"] == ["zz-last"]
    assert "Link" not in third.headers
    bad = V2.get(f"{stack.gw_url}/v2/team/tags/tags/list?n=-1", timeout=10)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
    unknown = V2.get(f"{stack.gw_url}/v2/team/nothing-here/tags/list", timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_catalog_and_api_version_header(stack: Stack, tmp_path: Path):
    image = oci.simple_image("proxy-catalog")
    _push(stack, tmp_path, {"c": image}, "c", "team/catalog:v1.0.0")
    base = V2.get(f"{stack.gw_url}/v2/", timeout=10)
    assert base.status_code == 200
    assert base.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    catalog = V2.get(f"{stack.gw_url}/v2/_catalog?n=1000", timeout=10)
    assert "team/catalog" in catalog.json()["repositories"]
    head = V2.head(f"{stack.gw_url}/v2/team/catalog/manifests/v1.0.0",
                         headers={"Accept": oci.OCI_MANIFEST}, timeout=10)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(image.manifest_bytes()))
    assert head.headers["Docker-Content-Digest"] == image.digest
    assert head.headers["Content-Type"] == oci.OCI_MANIFEST


def test_registry_down_gives_503_in_registry_envelope(private_stack: Stack):
    private_stack.registry.stop()
    resp = V2.get(f"{private_stack.gw_url}/v2/team/app/tags/list", timeout=5)
    assert resp.status_code == 503
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert resp.json()["errors"][0]["code"] == "UNAVAILABLE"
    blob = V2.get(f"{private_stack.gw_url}/v2/team/app/blobs/sha256:{'2' * 64}", timeout=5)
    assert blob.status_code == 503
    ready = V2.get(f"{private_stack.gw_url}/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"redis": "ok", "registry": "down"}
    assert "registry" in ready.json()["message"]
    health = V2.get(f"{private_stack.gw_url}/healthz", timeout=5)
    assert health.json() == {"status": "ok"}
    private_stack.registry.start()
    recovered = V2.get(f"{private_stack.gw_url}/v2/", timeout=5)
    assert recovered.status_code == 200
    assert json.loads(V2.get(f"{private_stack.gw_url}/readyz", timeout=5).text)[
        "status"] == "ok"
