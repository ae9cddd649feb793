"""Package inventory: each database format, whiteouts, opaque dirs, layers and malformed files."""

from __future__ import annotations

import io

import pytest

from service.scanner.inventory import Inventory, build_inventory, inventory_of_streams
from service.scanner.layers import iter_layer_files
from service.scanner.parsers import classify, os_ecosystem
from testkit import oci
from testkit import scan_fixtures as fx

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
DIST = "usr/lib/python3/dist-packages"
INSTALLED = "Status: install ok installed"


def inventory(*layers: oci.Layer, max_file_bytes: int = 16 * MiB) -> Inventory:
    return build_inventory(
        (
            la.digest,
            iter_layer_files(
                io.BytesIO(la.data),
                la.media_type,
                max_bytes=64 * MiB,
                max_file_bytes=max_file_bytes,
            ),
        )
        for la in layers
    )


def names(inv: Inventory) -> list[tuple[str, str, str]]:
    return [(p.ecosystem, p.name, p.version) for p in inv.packages]


def layer(files: dict[str, str | bytes], **kw) -> oci.Layer:
    return oci.tar_layer(files, compression=kw.pop("compression", "none"), **kw)


def test_vulnerable_fixture_inventory() -> None:
    layers = fx.vulnerable_image_layers()
    inv = inventory(*layers)
    assert [
        (p.ecosystem, p.name, p.version, p.source_name, p.source_version, p.layer_digest)
        for p in inv.packages
    ] == [
        ("Debian:12", "base-files", "12.4+deb12u5", "base-files", "12.4+deb12u5", layers[0].digest),
        (
            "Debian:12",
            "libssl3",
            "3.0.11-1~deb12u1",
            "openssl",
            "3.0.11-1~deb12u1",
            layers[0].digest,
        ),
        ("Debian:12", "zlib1g", "1:1.2.13.dfsg-1", "zlib", "1:1.2.13.dfsg-1", layers[0].digest),
        ("PyPI", "Jinja2", "3.1.2", None, None, layers[1].digest),
        ("npm", "lodash", "4.17.20", None, None, layers[1].digest),
    ]
    assert inv.os_release is not None
    assert (inv.os_release.ecosystem, inv.os_release.path) == ("Debian:12", "usr/lib/os-release")
    assert inv.skipped == 0


def test_alpine_apk_database() -> None:
    inv = inventory(*fx.alpine_image_layers())
    assert [(p.name, p.version, p.source_name, p.ecosystem, p.purl) for p in inv.packages] == [
        (
            "busybox",
            "1.36.1-r15",
            "busybox",
            "Alpine:v3.19",
            "pkg:apk/alpine/busybox@1.36.1-r15?arch=x86_64&distro=alpine-3.19.1",
        ),
        (
            "libcrypto3",
            "3.1.4-r1",
            "openssl",
            "Alpine:v3.19",
            "pkg:apk/alpine/libcrypto3@3.1.4-r1?arch=x86_64&distro=alpine-3.19.1",
        ),
        (
            "musl",
            "1.2.4_git20230717-r4",
            "musl",
            "Alpine:v3.19",
            "pkg:apk/alpine/musl@1.2.4_git20230717-r4?arch=x86_64&distro=alpine-3.19.1",
        ),
    ]


def test_distroless_status_d_one_file_per_package() -> None:
    inv = inventory(
        layer(
            {
                "etc/os-release": fx.DEBIAN_OS_RELEASE,
                "var/lib/dpkg/status.d/libc6": "Package: libc6\nVersion: 2.36-9+deb12u4\n"
                "Architecture: amd64\nSource: glibc\n",
                "var/lib/dpkg/status.d/libc6.md5sums": "d41d8cd98f00b204e9800998ecf8427e  lib/x\n",
                "var/lib/dpkg/status.d/tzdata": "Package: tzdata\nVersion: 2024a-0+deb12u1\n"
                "Architecture: all\n",
            }
        )
    )
    assert [(p.name, p.version, p.source_name, p.source_version, p.purl) for p in inv.packages] == [
        (
            "libc6",
            "2.36-9+deb12u4",
            "glibc",
            "2.36-9+deb12u4",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12",
        ),
        (
            "tzdata",
            "2024a-0+deb12u1",
            "tzdata",
            "2024a-0+deb12u1",
            "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12",
        ),
    ]
    assert inv.skipped == 0


def test_python_dist_info_egg_info_dir_and_egg_info_file() -> None:
    inv = inventory(
        layer(
            {
                f"{DIST}/Foo_Bar-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: Foo_Bar\n"
                "Version: 1.0\n\nlong description\nName: x\n",
                f"{DIST}/legacy.egg-info/PKG-INFO": "Name: legacy\nVersion: 0.9\n",
                f"{DIST}/distutils_pkg-2.0.egg-info": "Metadata-Version: 1.1\nName: distutils-pkg\n"
                "Version: 2.0\n",
                f"{DIST}/other.dist-info/RECORD": "not metadata",
            }
        )
    )
    assert [(p.name, p.version, p.purl) for p in inv.packages] == [
        ("Foo_Bar", "1.0", "pkg:pypi/foo-bar@1.0"),
        ("distutils-pkg", "2.0", "pkg:pypi/distutils-pkg@2.0"),
        ("legacy", "0.9", "pkg:pypi/legacy@0.9"),
    ]


def test_npm_packages_including_scoped_but_not_nested_fixtures() -> None:
    nm = "app/node_modules"
    inv = inventory(
        layer(
            {
                f"{nm}/express/package.json": '{"name": "express", "version": "4.18.2"}',
                f"{nm}/@babel/core/package.json": '{"name": "@babel/core", "version": "7.23.0"}',
                f"{nm}/express/node_modules/qs/package.json": '{"name": "qs", "version": "6.11.0"}',
                f"{nm}/express/test/fixtures/package.json": '{"name": "fixture", "version": "0"}',
                f"{nm}/no-version/package.json": '{"name": "no-version"}',
                f"{nm}/.package-lock.json": "{}",
                "app/package.json": '{"name": "the-app", "version": "1.0.0"}',
            }
        )
    )
    assert [(p.name, p.version, p.purl) for p in inv.packages] == [
        ("@babel/core", "7.23.0", "pkg:npm/%40babel/core@7.23.0"),
        ("express", "4.18.2", "pkg:npm/express@4.18.2"),
        ("qs", "6.11.0", "pkg:npm/qs@6.11.0"),
    ]
    assert inv.skipped == 0


@pytest.mark.parametrize(
    ("os_id", "version_id", "ecosystem"),
    [
        ("debian", "12", "Debian:12"),
        ("debian", "11.9", "Debian:11"),
        ("debian", "", "Debian"),
        ("alpine", "3.19.1", "Alpine:v3.19"),
        ("alpine", "3.20.0_alpha20240329", "Alpine:v3.20"),
        ("ubuntu", "22.04", "Ubuntu:22.04"),
        ("fedora", "39", None),
    ],
)
def test_os_release_to_osv_ecosystem(os_id: str, version_id: str, ecosystem: str | None) -> None:
    assert os_ecosystem(os_id, version_id) == ecosystem


def test_ubuntu_dpkg_packages_get_ubuntu_purls() -> None:
    inv = inventory(
        layer(
            {
                "etc/os-release": 'ID=ubuntu\nVERSION_ID="22.04"\n',
                "var/lib/dpkg/status": f"Package: bash\n{INSTALLED}\nVersion: 5.1-6ubuntu1\n",
            }
        )
    )
    assert [(p.ecosystem, p.purl) for p in inv.packages] == [
        ("Ubuntu:22.04", "pkg:deb/ubuntu/bash@5.1-6ubuntu1?distro=ubuntu-22.04"),
    ]


def test_whiteout_in_a_later_layer_deletes_a_package_file() -> None:
    meta = f"{DIST}/six-1.16.0.dist-info"
    lower = layer(
        {
            f"{meta}/METADATA": "Name: six\nVersion: 1.16.0\n",
            f"{DIST}/keep-1.0.dist-info/METADATA": "Name: keep\nVersion: 1.0\n",
        }
    )
    upper = layer({oci.whiteout(meta): b""}, compression="gzip")
    assert [p.name for p in inventory(lower).packages] == ["keep", "six"]
    assert [p.name for p in inventory(lower, upper).packages] == ["keep"]


def test_whiteout_of_the_dpkg_status_file_itself() -> None:
    layers = fx.vulnerable_image_layers()
    gone = layer({oci.whiteout("var/lib/dpkg/status"): b""})
    assert [p.name for p in inventory(layers[0], gone).packages] == []


def test_opaque_directory_hides_everything_below_it_from_lower_layers() -> None:
    lower = layer(
        {
            f"{DIST}/six-1.16.0.dist-info/METADATA": "Name: six\nVersion: 1.16.0\n",
            "opt/other/x.dist-info/METADATA": "Name: other\nVersion: 2\n",
        }
    )
    upper = layer(
        {
            oci.opaque(DIST): b"",
            f"{DIST}/fresh-3.0.dist-info/METADATA": "Name: fresh\nVersion: 3.0\n",
        }
    )
    inv = inventory(lower, upper)
    assert [(p.name, p.layer_digest) for p in inv.packages] == [
        ("fresh", upper.digest),
        ("other", lower.digest),
    ]


def test_whiteout_applies_only_to_lower_layers_not_its_own() -> None:
    meta = f"{DIST}/six-1.16.0.dist-info"
    lower = layer({f"{meta}/METADATA": "Name: six\nVersion: 1.16.0\n"})
    same = layer({oci.whiteout(meta): b"", f"{meta}/METADATA": "Name: six\nVersion: 1.16.0\n"})
    assert [(p.name, p.layer_digest) for p in inventory(lower, same).packages] == [
        ("six", same.digest)
    ]


def test_a_symlink_replacing_a_package_file_or_its_directory_removes_it() -> None:
    meta = f"{DIST}/six-1.16.0.dist-info"
    lower = layer({f"{meta}/METADATA": "Name: six\nVersion: 1.16.0\n"})
    over_file = layer({}, symlinks={f"{meta}/METADATA": "/dev/null"})
    over_dir = layer({}, symlinks={DIST: "/elsewhere"})
    assert inventory(lower, over_file).packages == []
    assert inventory(lower, over_dir).packages == []


def test_rewritten_dpkg_status_keeps_the_layer_that_introduced_each_package() -> None:
    para = "Package: {0}\nStatus: install ok installed\nVersion: {1}\n"
    base = layer({"var/lib/dpkg/status": para.format("a", "1") + "\n" + para.format("b", "1")})
    upgrade = layer(
        {
            "var/lib/dpkg/status": para.format("a", "1")
            + "\n"
            + para.format("b", "2")
            + "\n"
            + para.format("c", "1")
        }
    )
    inv = inventory(base, upgrade)
    assert [(p.name, p.version, p.layer_digest) for p in inv.packages] == [
        ("a", "1", base.digest),
        ("b", "2", upgrade.digest),
        ("c", "1", upgrade.digest),
    ]


def test_os_release_symlink_falls_back_to_usr_lib() -> None:
    inv = inventory(
        layer(
            {"usr/lib/os-release": "ID=debian\nVERSION_ID=12\n"},
            symlinks={"etc/os-release": "../usr/lib/os-release"},
        )
    )
    assert inv.os_release is not None
    assert (inv.os_release.ecosystem, inv.os_release.path) == ("Debian:12", "usr/lib/os-release")


def test_malformed_files_are_skipped_and_counted() -> None:
    status = (
        "Package: good\nStatus: install ok installed\nVersion: 1.0\n\n"
        "Package: noversion\nStatus: install ok installed\n\n"
        "this line has no colon\nPackage: broken\nVersion: 2\nStatus: install ok installed\n\n"
        "Package: nostatus\nVersion: 3\n"
    )
    inv = inventory(
        layer(
            {
                "var/lib/dpkg/status": status,
                "lib/apk/db/installed": "P:ok\nV:1-r0\n\nP:missing-version\n",
                f"{DIST}/bad-1.dist-info/METADATA": "Metadata-Version: 2.1\nSummary: no name\n",
                f"{DIST}/junk-1.dist-info/METADATA": b"\xff\xfe\x00garbage",
                f"{DIST}/spaces-1.dist-info/METADATA": "Name: not a name\nVersion: 1\n",
                "node_modules/broken/package.json": "{not json",
                "node_modules/array/package.json": "[1, 2]",
                "etc/os-release": "NAME=nothing useful\n",
            }
        )
    )
    assert names(inv) == [("Alpine", "ok", "1-r0"), ("Debian", "good", "1.0")]
    assert inv.skipped == 3 + 1 + 3 + 2 + 1
    assert inv.os_release is None


def test_oversized_package_file_is_skipped_and_counted() -> None:
    big = "Package: x\nStatus: install ok installed\nVersion: 1\nDescription: " + "y" * 5000 + "\n"
    inv = inventory(layer({"var/lib/dpkg/status": big}), max_file_bytes=4096)
    assert (inv.packages, inv.skipped) == ([], 1)


def test_malformed_file_deleted_later_is_not_counted() -> None:
    bad = layer({f"{DIST}/bad-1.dist-info/METADATA": "Summary: no name\n"})
    gone = layer({oci.whiteout(f"{DIST}/bad-1.dist-info"): b""})
    assert inventory(bad).skipped == 1
    assert inventory(bad, gone).skipped == 0


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("var/lib/dpkg/status", "dpkg"),
        ("var/lib/dpkg/status-old", None),
        ("var/lib/dpkg/status.d/zlib1g", "dpkg.d"),
        ("var/lib/dpkg/status.d/zlib1g.md5sums", None),
        ("lib/apk/db/installed", "apk"),
        ("usr/lib/os-release", "os-release"),
        ("x/y.dist-info/METADATA", "pypi"),
        ("x/y.dist-info/RECORD", None),
        ("x/node_modules/a/b/package.json", None),
        ("package.json", None),
    ],
)
def test_classify(path: str, kind: str | None) -> None:
    assert classify(path) == kind


def test_inventory_of_streams_reads_mixed_compressions() -> None:
    layers = [
        fx.vulnerable_image_layers()[0],
        layer(
            {"node_modules/a/package.json": '{"name":"a","version":"1.0.0"}'}, compression="zstd"
        ),
    ]
    inv = inventory_of_streams(
        [(la.digest, la.media_type, io.BytesIO(la.data)) for la in layers], max_bytes=MiB
    )
    assert [p.name for p in inv.packages] == ["base-files", "libssl3", "zlib1g", "a"]
