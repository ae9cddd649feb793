"""End to end: layers -> inventory -> match against the fixture OSV database, exact findings."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from service.scanner.inventory import Inventory, build_inventory
from service.scanner.layers import iter_layer_files
from service.scanner.matching import match_inventory
from service.scanner.osv_export import read_osv
from service.store.vulndb import VulnDB
from testkit import oci
from testkit import scan_fixtures as fx

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


def inventory(layers: list[oci.Layer]) -> Inventory:
    return build_inventory(
        (la.digest, iter_layer_files(io.BytesIO(la.data), la.media_type, max_bytes=64 * MiB))
        for la in layers
    )


def vulndb(tmp_path: Path, records: list[dict[str, Any]]) -> VulnDB:
    db = VulnDB(fakeredis.FakeRedis(decode_responses=True))
    db.import_documents(read_osv(fx.write_osv_dir(tmp_path / "osv", records)))
    return db


def findings(layers: list[oci.Layer], db: VulnDB) -> list[dict[str, Any]]:
    return [f.to_dict() for f in match_inventory(inventory(layers), db)]


def test_vulnerable_image_exact_findings(tmp_path: Path) -> None:
    db = vulndb(tmp_path, fx.osv_fixture_records())
    assert findings(fx.vulnerable_image_layers(), db) == fx.EXPECTED_FINDINGS


def test_alpine_image_exact_findings(tmp_path: Path) -> None:
    db = vulndb(tmp_path, fx.osv_fixture_records())
    assert findings(fx.alpine_image_layers(), db) == fx.ALPINE_EXPECTED_FINDINGS


def test_same_findings_from_an_all_zip_import(tmp_path: Path) -> None:
    db = VulnDB(fakeredis.FakeRedis(decode_responses=True))
    members = {f"{r['id']}.json": r for r in fx.osv_fixture_records()}
    db.import_documents(read_osv(fx.write_osv_zip(tmp_path / "all.zip", members)))
    assert findings(fx.vulnerable_image_layers(), db) == fx.EXPECTED_FINDINGS


def test_without_the_whiteout_layer_the_deleted_package_is_found(tmp_path: Path) -> None:
    db = vulndb(tmp_path, fx.osv_fixture_records())
    layers = fx.vulnerable_image_layers()[:2]
    extra = [f for f in findings(layers, db) if f["package"] == "requests"]
    assert extra == [
        {
            "id": "GHSA-j8r2-6x86-q33q",
            "aliases": [],
            "package": "requests",
            "ecosystem": "PyPI",
            "installed_version": "2.25.0",
            "fixed_version": "2.31.0",
            "severity": "medium",
            "layer": layers[1].digest,
            "purl": "pkg:pypi/requests@2.25.0",
        }
    ]


def test_empty_database_finds_nothing() -> None:
    db = VulnDB(fakeredis.FakeRedis(decode_responses=True))
    assert findings(fx.vulnerable_image_layers(), db) == []


def test_dedup_per_advisory_package_and_version_but_not_across_binaries(tmp_path: Path) -> None:
    status = (
        "Package: libssl3\nStatus: install ok installed\nSource: openssl\n"
        "Version: 3.0.11-1~deb12u1\n\n"
        "Package: openssl\nStatus: install ok installed\nVersion: 3.0.11-1~deb12u1\n"
    )
    meta = "Name: jinja2\nVersion: 3.1.2\n"
    layer = oci.tar_layer(
        {
            "etc/os-release": fx.DEBIAN_OS_RELEASE,
            "var/lib/dpkg/status": status,
            "usr/lib/python3/dist-packages/jinja2-3.1.2.dist-info/METADATA": meta,
            "opt/venv/lib/python3.11/site-packages/Jinja2-3.1.2.dist-info/METADATA": meta,
        }
    )
    db = vulndb(tmp_path, fx.osv_fixture_records())
    got = [(f["id"], f["package"], f["installed_version"]) for f in findings([layer], db)]
    assert got == [
        ("DEBIAN-CVE-2023-5678", "libssl3", "3.0.11-1~deb12u1"),
        ("DEBIAN-CVE-2023-5678", "openssl", "3.0.11-1~deb12u1"),
        ("GHSA-h5c8-rqwp-cp95", "jinja2", "3.1.2"),
    ]


def test_dpkg_matches_by_source_version_and_reports_the_binary_one(tmp_path: Path) -> None:
    status = (
        "Package: libfoo1\nStatus: install ok installed\nSource: foo (1.0-1)\nVersion: 1.0-1+b2\n"
    )
    layer = oci.tar_layer({"etc/os-release": fx.DEBIAN_OS_RELEASE, "var/lib/dpkg/status": status})
    record = {
        "id": "DEBIAN-CVE-2026-0001",
        "modified": "2026-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "Debian:12", "name": "foo"},
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "0"}, {"fixed": "1.0-1+deb12u1"}],
                    }
                ],
            }
        ],
    }
    (finding,) = findings([layer], vulndb(tmp_path, [record]))
    assert (finding["package"], finding["installed_version"], finding["fixed_version"]) == (
        "libfoo1",
        "1.0-1+b2",
        "1.0-1+deb12u1",
    )


def test_without_os_release_only_release_independent_advisories_apply(tmp_path: Path) -> None:
    base = fx.vulnerable_image_layers()[0]
    no_os = oci.tar_layer({oci.whiteout("usr/lib/os-release"): b""})
    zlib_old = oci.tar_layer(
        {
            "var/lib/dpkg/status": (
                "Package: zlib1g\nStatus: install ok installed\nSource: zlib (1:1.2.11.dfsg-2)\n"
                "Version: 1:1.2.11.dfsg-2\n\n"
                "Package: libssl3\nStatus: install ok installed\nSource: openssl\n"
                "Version: 3.0.11-1~deb12u1\n"
            )
        }
    )
    db = vulndb(tmp_path, fx.osv_fixture_records())
    got = [(f["id"], f["ecosystem"]) for f in findings([base, no_os, zlib_old], db)]
    assert got == [("DEBIAN-CVE-2022-37434", "Debian")]
