"""Images and an OSV database whose scan result is known exactly (unit and integration tests).

`vulnerable_image_layers()` is a Debian 12 image with dpkg, Python and npm packages and a
Python package deleted by a whiteout; `alpine_image_layers()` an Alpine 3.19 image;
`osv_fixture_records()` the advisories; `EXPECTED_FINDINGS` / `ALPINE_EXPECTED_FINDINGS`
what `match_inventory` must return for them, in its order (most severe first, then id).
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path
from typing import Any

from testkit import oci

SITE = "usr/local/lib/python3.11/site-packages"
DELETED_DIST_INFO = f"{SITE}/requests-2.25.0.dist-info"

DEBIAN_OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""

ALPINE_OS_RELEASE = """\
NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
"""

DPKG_STATUS = """\
Package: base-files
Status: install ok installed
Priority: required
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: libssl3
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 3.0.11-1~deb12u1
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation.

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib (1:1.2.13.dfsg-1)
Version: 1:1.2.13.dfsg-1
Description: compression library - runtime

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1-1
Description: removed, only its configuration files remain
"""

APK_INSTALLED = """\
C:Q1abc=
P:libcrypto3
V:3.1.4-r1
A:x86_64
o:openssl
T:Crypto library from openssl

P:busybox
V:1.36.1-r15
A:x86_64
o:busybox

P:musl
V:1.2.4_git20230717-r4
A:x86_64
o:musl
"""

JINJA2_METADATA = "Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.2\nSummary: templates\n"
REQUESTS_METADATA = "Metadata-Version: 2.1\nName: requests\nVersion: 2.25.0\n"
LODASH_PACKAGE = '{"name": "lodash", "version": "4.17.20", "license": "MIT"}'


def vulnerable_image_layers() -> list[oci.Layer]:
    """Debian 12 base (gzip), Python + npm (uncompressed), then a whiteout (gzip)."""
    base = oci.tar_layer(
        {"usr/lib/os-release": DEBIAN_OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS},
        dirs=["etc", "usr", "usr/lib", "var", "var/lib", "var/lib/dpkg"],
        symlinks={"etc/os-release": "../usr/lib/os-release"},
        compression="gzip",
    )
    apps = oci.tar_layer(
        {
            f"{SITE}/Jinja2-3.1.2.dist-info/METADATA": JINJA2_METADATA,
            f"{DELETED_DIST_INFO}/METADATA": REQUESTS_METADATA,
            "usr/local/lib/node_modules/lodash/package.json": LODASH_PACKAGE,
        },
        compression="none",
    )
    cleanup = oci.tar_layer({oci.whiteout(DELETED_DIST_INFO): b""}, compression="gzip")
    return [base, apps, cleanup]


def alpine_image_layers() -> list[oci.Layer]:
    """One gzip layer: Alpine 3.19 os-release and an apk database."""
    return [
        oci.tar_layer(
            {"etc/os-release": ALPINE_OS_RELEASE, "lib/apk/db/installed": APK_INSTALLED},
            compression="gzip",
        )
    ]


def _osv(
    id_: str, ecosystem: str, name: str, events: list[dict[str, str]], **extra: Any
) -> dict[str, Any]:
    range_type = extra.pop("range_type", "ECOSYSTEM")
    return {
        "schema_version": "1.6.0",
        "id": id_,
        "modified": "2026-11-01T00:00:00Z",
        "published": "2026-10-01T00:00:00Z",
        "summary": f"fixture advisory for {name}",
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [{"type": range_type, "events": events}],
            }
        ],
        **extra,
    }


def osv_fixture_records() -> list[dict[str, Any]]:
    """OSV records: each inventory package above is hit, missed or out of scope on purpose."""
    return copy.deepcopy(_RECORDS)


_RECORDS = [
    # openssl (source of libssl3 / libcrypto3): vulnerable on Debian 12 and Alpine 3.19.
    _osv(
        "DEBIAN-CVE-2023-5678",
        "Debian:12",
        "openssl",
        [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}],
        aliases=["CVE-2023-5678"],
        severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"}],
    ),
    _osv(
        "DEBIAN-CVE-2023-0001", "Debian:11", "openssl", [{"introduced": "0"}, {"fixed": "3.0.99-1"}]
    ),  # another release: never applies
    # zlib: installed exactly at the fixed version, by the generic "Debian" ecosystem.
    _osv(
        "DEBIAN-CVE-2022-37434",
        "Debian",
        "zlib",
        [{"introduced": "0"}, {"fixed": "1:1.2.13.dfsg-1"}],
        aliases=["CVE-2022-37434"],
    ),
    # oldpkg is deinstalled: never a finding.
    _osv("DEBIAN-CVE-2099-0001", "Debian:12", "oldpkg", [{"introduced": "0"}]),
    _osv(
        "ALPINE-CVE-2023-6129",
        "Alpine:v3.19",
        "openssl",
        [{"introduced": "0"}, {"fixed": "3.1.4-r3"}],
        aliases=["CVE-2023-6129"],
        database_specific={"severity": "HIGH"},
    ),
    _osv(
        "ALPINE-CVE-2023-42366",
        "Alpine:v3.19",
        "busybox",
        [{"introduced": "0"}, {"fixed": "1.36.1-r14"}],
    ),  # r15 installed: fixed
    _osv(
        "GHSA-h5c8-rqwp-cp95",
        "PyPI",
        "jinja2",
        [{"introduced": "0"}, {"fixed": "3.1.3"}],
        aliases=["CVE-2024-22195"],
        database_specific={"severity": "MODERATE"},
    ),
    # requests is deleted by a whiteout in the image: never a finding.
    _osv(
        "GHSA-j8r2-6x86-q33q",
        "PyPI",
        "requests",
        [{"introduced": "0"}, {"fixed": "2.31.0"}],
        database_specific={"severity": "MODERATE"},
    ),
    _osv(
        "GHSA-35jh-r3h4-6jhm",
        "npm",
        "lodash",
        [{"introduced": "0"}, {"fixed": "4.17.21"}],
        range_type="SEMVER",
        aliases=["CVE-2021-23337"],
        severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"}],
    ),
    _osv(
        "GHSA-p6mc-m468-83gw",
        "npm",
        "lodash",
        [{"introduced": "4.17.0"}, {"last_affected": "4.17.19"}],
    ),  # 4.17.20 is past it
]


def write_osv_dir(directory: Path, records: list[dict[str, Any]]) -> Path:
    """Write one ``<id>.json`` per record (the osv.dev per-advisory layout); return the dir."""
    directory.mkdir(parents=True, exist_ok=True)
    for record in records:
        (directory / f"{record['id']}.json").write_text(json.dumps(record))
    return directory


def write_osv_zip(path: Path, members: dict[str, Any]) -> Path:
    """Write an osv.dev ``all.zip``-style archive: member name -> record (or raw bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content if isinstance(content, bytes) else json.dumps(content))
    return path


def _expected(layers: list[oci.Layer], findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**f, "layer": layers[f["layer"]].digest} for f in findings]


EXPECTED_FINDINGS: list[dict[str, Any]] = _expected(
    vulnerable_image_layers(),
    [
        {
            "id": "GHSA-35jh-r3h4-6jhm",
            "aliases": ["CVE-2021-23337"],
            "package": "lodash",
            "ecosystem": "npm",
            "installed_version": "4.17.20",
            "fixed_version": "4.17.21",
            "severity": "high",
            "layer": 1,
            "purl": "pkg:npm/lodash@4.17.20",
        },
        {
            "id": "DEBIAN-CVE-2023-5678",
            "aliases": ["CVE-2023-5678"],
            "package": "libssl3",
            "ecosystem": "Debian:12",
            "installed_version": "3.0.11-1~deb12u1",
            "fixed_version": "3.0.11-1~deb12u2",
            "severity": "medium",
            "layer": 0,
            "purl": "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&distro=debian-12",
        },
        {
            "id": "GHSA-h5c8-rqwp-cp95",
            "aliases": ["CVE-2024-22195"],
            "package": "Jinja2",
            "ecosystem": "PyPI",
            "installed_version": "3.1.2",
            "fixed_version": "3.1.3",
            "severity": "medium",
            "layer": 1,
            "purl": "pkg:pypi/jinja2@3.1.2",
        },
    ],
)

ALPINE_EXPECTED_FINDINGS: list[dict[str, Any]] = _expected(
    alpine_image_layers(),
    [
        {
            "id": "ALPINE-CVE-2023-6129",
            "aliases": ["CVE-2023-6129"],
            "package": "libcrypto3",
            "ecosystem": "Alpine:v3.19",
            "installed_version": "3.1.4-r1",
            "fixed_version": "3.1.4-r3",
            "severity": "high",
            "layer": 0,
            "purl": "pkg:apk/alpine/libcrypto3@3.1.4-r1?arch=x86_64&distro=alpine-3.19.1",
        },
    ],
)

EXPECTED_PURLS = {
    "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64&distro=debian-12",
    "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&distro=debian-12",
    "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12",
    "pkg:pypi/jinja2@3.1.2",
    "pkg:npm/lodash@4.17.20",
}
