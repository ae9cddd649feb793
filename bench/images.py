"""Small real OCI images (testkit.oci) pushed blob by blob over the v2 API."""

from __future__ import annotations

from bench.client import Http, put_small_blob
from testkit import oci


def push_image(http_: Http, repository: str, image: oci.Image, tag: str) -> str:
    """Upload the config and layers (skipping those present) and PUT the manifest; digest."""
    for digest, data in image.blobs().items():
        status, _, _ = http_.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if status != 200:
            put_small_blob(http_, repository, data)
    body = image.manifest_bytes()
    status, headers, data = http_.request("PUT", f"/v2/{repository}/manifests/{tag}", body,
                                          {"Content-Type": oci.OCI_MANIFEST})
    if status != 201:
        raise RuntimeError(f"manifest PUT {repository}:{tag} answered {status}: {data[:300]!r}")
    return headers.get("Docker-Content-Digest") or image.digest


def image(name: str) -> oci.Image:
    """A two-layer gzip image whose digest depends on `name`."""
    return oci.simple_image(name)
