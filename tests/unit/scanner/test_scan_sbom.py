"""CycloneDX SBOM: schema-valid offline, with the inventory's purls and the image component."""

from __future__ import annotations

import io

import pytest

from service.scanner.inventory import Inventory, build_inventory
from service.scanner.layers import iter_layer_files
from service.scanner.sbom import cyclonedx_json, image_purl, validation_errors
from testkit import oci
from testkit import scan_fixtures as fx

pytestmark = pytest.mark.unit

DIGEST = "sha256:" + "ab" * 32


def inventory(layers: list[oci.Layer]) -> Inventory:
    return build_inventory(
        (la.digest, iter_layer_files(io.BytesIO(la.data), la.media_type, max_bytes=1 << 26))
        for la in layers
    )


def test_sbom_validates_and_lists_every_purl() -> None:
    doc = cyclonedx_json(
        inventory(fx.vulnerable_image_layers()), image_ref="team/app:1.0", digest=DIGEST
    )
    assert validation_errors(doc) is None
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")
    assert {c["purl"] for c in doc["components"]} == fx.EXPECTED_PURLS
    assert len({c["bom-ref"] for c in doc["components"]}) == len(doc["components"])
    image = doc["metadata"]["component"]
    assert (image["type"], image["name"], image["version"], image["purl"]) == (
        "container",
        "team/app:1.0",
        DIGEST,
        f"pkg:oci/app@sha256:{'ab' * 32}?repository_url=team/app",
    )
    (dependency,) = [d for d in doc["dependencies"] if d["ref"] == image["bom-ref"]]
    assert set(dependency["dependsOn"]) == fx.EXPECTED_PURLS


def test_sbom_records_layer_and_source_of_each_component() -> None:
    layers = fx.vulnerable_image_layers()
    doc = cyclonedx_json(inventory(layers), image_ref="team/app:1.0", digest=DIGEST)
    (libssl,) = [c for c in doc["components"] if c["name"] == "libssl3"]
    assert {p["name"]: p["value"] for p in libssl["properties"]} == {
        "tagwarden:ecosystem": "Debian:12",
        "tagwarden:layer_digest": layers[0].digest,
        "tagwarden:path": "var/lib/dpkg/status",
        "tagwarden:source_name": "openssl",
        "tagwarden:source_version": "3.0.11-1~deb12u1",
    }


def test_alpine_sbom_validates() -> None:
    doc = cyclonedx_json(
        inventory(fx.alpine_image_layers()), image_ref="lib/alpine@" + DIGEST, digest=DIGEST
    )
    assert validation_errors(doc) is None
    assert sorted(c["purl"] for c in doc["components"]) == [
        "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1",
        "pkg:apk/alpine/libcrypto3@3.1.4-r1?arch=x86_64&distro=alpine-3.19.1",
        "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
    ]


def test_an_empty_inventory_is_still_a_valid_sbom() -> None:
    doc = cyclonedx_json(Inventory(), image_ref="team/empty:latest", digest=DIGEST)
    assert validation_errors(doc) is None
    assert doc.get("components", []) == []


def test_validator_rejects_a_broken_document() -> None:
    doc = cyclonedx_json(Inventory(), image_ref="team/empty:latest", digest=DIGEST)
    doc["components"] = [{"name": "no type"}]
    assert validation_errors(doc) is not None


@pytest.mark.parametrize(
    ("ref", "purl"),
    [
        ("team/app:1.0", "pkg:oci/app@sha256:{h}?repository_url=team/app"),
        (
            "localhost:5000/team/app",
            "pkg:oci/app@sha256:{h}?repository_url=localhost:5000/team/app",
        ),
        ("app@sha256:" + "ab" * 32, "pkg:oci/app@sha256:{h}?repository_url=app"),
    ],
)
def test_image_purl(ref: str, purl: str) -> None:
    assert image_purl(ref, DIGEST) == purl.format(h="ab" * 32)


def test_sbom_serial_number_is_stable_for_an_image() -> None:
    inv = inventory(fx.alpine_image_layers())
    first = cyclonedx_json(inv, image_ref="a/b:1", digest=DIGEST)["serialNumber"]
    assert cyclonedx_json(inv, image_ref="a/b:1", digest=DIGEST)["serialNumber"] == first
