"""The front-proxy deployment: real nginx (from `tagwarden nginx-config`) in front of the gateway.

Blob GETs are authorized by the gateway and served by nginx from the registry's storage;
everything else still passes through the gateway and its governance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

from testkit import oci, procs
from tests.integration.conftest import V2, Stack


@pytest.fixture(scope="module")
def front(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of nginx in front of the session stack's gateway."""
    nginx = procs.nginx_server(tmp_path_factory.mktemp("nginx"), stack.gateway.port,
                               stack.workdir / "registry" / "data")
    yield f"127.0.0.1:{nginx.port}"
    nginx.stop()


@pytest.fixture(scope="module")
def pushed(stack: Stack, front: str, tmp_path_factory: pytest.TempPathFactory) -> oci.Image:
    """An image pushed through nginx with skopeo (uploads and manifests via the gateway)."""
    image = oci.simple_image("front-proxy", nlayers=3)
    layout = oci.write_layout(tmp_path_factory.mktemp("layout"), {"fp": image})
    result = oci.skopeo_copy(f"oci:{layout}:fp", f"docker://{front}/front/app:v1.0.0")
    assert result.returncode == 0, result.stderr
    return image


def blob_url(front: str, repo: str, digest: str) -> str:
    return f"http://{front}/v2/{repo}/blobs/{digest}"


def test_skopeo_round_trip_through_nginx(stack: Stack, front: str, pushed: oci.Image,
                                         tmp_path: Path):
    accel_before = _accel_count(stack)
    result = oci.skopeo_copy(f"docker://{front}/front/app:v1.0.0", f"oci:{tmp_path / 'out'}:x")
    assert result.returncode == 0, result.stderr
    blobs = tmp_path / "out" / "blobs" / "sha256"
    for layer in pushed.layers:
        assert (blobs / layer.digest.partition(":")[2]).read_bytes() == layer.data
    # the layers and the config came from nginx, after the gateway authorized each one
    assert _accel_count(stack) - accel_before == len(pushed.layers) + 1


def test_blob_get_is_served_by_nginx_with_registry_headers(front: str, pushed: oci.Image):
    layer = pushed.layers[0]
    resp = V2.get(blob_url(front, "front/app", layer.digest), timeout=10)
    assert resp.status_code == 200
    assert resp.content == layer.data
    assert resp.headers["Docker-Content-Digest"] == layer.digest
    assert resp.headers["Content-Length"] == str(layer.size)
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert "X-Accel-Redirect" not in resp.headers
    part = V2.get(blob_url(front, "front/app", layer.digest),
                  headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206
    assert part.content == layer.data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{layer.size}"


def test_blob_get_without_credentials_is_refused_by_the_gateway(front: str, pushed: oci.Image):
    resp = requests.get(blob_url(front, "front/app", pushed.layers[0].digest), timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert pushed.layers[0].data not in resp.content


def test_blob_of_another_repository_is_not_served(front: str, pushed: oci.Image):
    """The blob exists in storage, but not in this repository: the registry says 404."""
    resp = V2.get(blob_url(front, "front/other", pushed.layers[0].digest), timeout=10)
    assert resp.status_code == 404
    assert resp.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_internal_location_is_not_reachable_from_outside(front: str, pushed: oci.Image):
    hexd = pushed.layers[0].digest.partition(":")[2]
    resp = V2.get(f"http://{front}{procs.ACCEL_PATH}sha256/{hexd[:2]}/{hexd}/data", timeout=10)
    assert resp.status_code == 404
    assert pushed.layers[0].data not in resp.content


def test_gateway_reached_directly_still_streams(stack: Stack, pushed: oci.Image):
    """Without nginx's header the gateway streams the blob itself, even with accel on;
    a client forging the header gets no bytes from storage, only an empty answer."""
    layer = pushed.layers[0]
    url = f"{stack.gw_url}/v2/front/app/blobs/{layer.digest}"
    resp = V2.get(url, timeout=10)
    assert resp.status_code == 200 and resp.content == layer.data
    assert "X-Accel-Redirect" not in resp.headers
    forged = V2.get(url, headers={"X-Tagwarden-Blob-Accel": procs.ACCEL_PATH}, timeout=10)
    assert forged.status_code == 200 and forged.content == b""
    assert forged.headers["X-Accel-Redirect"].startswith(procs.ACCEL_PATH)


def test_manifest_governance_still_applies_through_nginx(front: str, pushed: oci.Image):
    """A release tag is immutable: re-pointing it through nginx is refused by the gateway."""
    other = oci.simple_image("front-proxy-other")
    for digest, data in other.blobs().items():
        up = V2.post(f"http://{front}/v2/front/app/blobs/uploads/", timeout=10)
        assert up.status_code == 202, up.text
        location = urljoin(f"http://{front}/", up.headers["Location"])
        assert location.startswith(f"http://{front}/v2/front/app/blobs/uploads/")
        done = V2.put(location, params={"digest": digest}, data=data,
                      headers={"Content-Type": "application/octet-stream"}, timeout=10)
        assert done.status_code == 201, done.text
    resp = V2.put(f"http://{front}/v2/front/app/manifests/v1.0.0", data=other.manifest_bytes(),
                  headers={"Content-Type": oci.OCI_MANIFEST}, timeout=10)
    assert resp.status_code == 403
    assert resp.json()["errors"][0]["code"] == "DENIED"


def _accel_count(stack: Stack) -> float:
    text = V2.get(f"{stack.gw_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("tagwarden_proxy_blob_redirects_total "):
            return float(line.split()[1])
    return 0.0
