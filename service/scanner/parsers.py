"""Parsers for the package databases an image carries; each is lenient and counts what it skips."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import HeaderParser

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d"
APK_INSTALLED = "lib/apk/db/installed"
OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")

# PEP 508 project names; anything else in a Name header is garbage, not a package.
_PY_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_DPKG_SOURCE = re.compile(r"^(\S+)(?:\s+\((\S+)\))?$")


@dataclass(frozen=True)
class Record:
    """One package as read from a database file, before ecosystem and purl are known."""

    kind: str  # dpkg, apk, pypi, npm
    name: str
    version: str
    source_name: str | None = None
    source_version: str | None = None
    arch: str | None = None

    @property
    def identity(self) -> tuple[str, str, str, str | None]:
        """What must stay equal for a rewritten file to keep a package's original layer."""
        return (self.kind, self.name, self.version, self.arch)


@dataclass
class Parsed:
    """What one file contributed: package records, or an os-release, and a skipped count."""

    kind: str
    records: list[Record] = field(default_factory=list)
    os_release: dict[str, str] | None = None
    skipped: int = 0


def classify(path: str) -> str | None:
    """Which parser reads ``path`` (dpkg, apk, pypi, npm, os-release), or None."""
    head, _, base = path.rpartition("/")
    if path == DPKG_STATUS:
        return "dpkg"
    if head == DPKG_STATUS_D and not base.startswith(".") and not base.endswith(".md5sums"):
        return "dpkg.d"
    if path == APK_INSTALLED:
        return "apk"
    if path in OS_RELEASE_PATHS:
        return "os-release"
    if base == "METADATA" and head.endswith(".dist-info"):
        return "pypi"
    if (base == "PKG-INFO" and head.endswith(".egg-info")) or base.endswith(".egg-info"):
        return "pypi"  # a lone foo-1.0.egg-info file is distutils' PKG-INFO under another name
    if base == "package.json" and _npm_package_dir(head):
        return "npm"
    return None


def _npm_package_dir(head: str) -> bool:
    """True for ``.../node_modules/<name>`` and ``.../node_modules/@scope/<name>``."""
    parts = head.split("/")
    if "node_modules" not in parts:
        return False
    rest = parts[len(parts) - parts[::-1].index("node_modules") :]
    if len(rest) == 1:
        return not rest[0].startswith(".")
    return len(rest) == 2 and rest[0].startswith("@") and not rest[1].startswith(".")


def parse(kind: str, data: bytes) -> Parsed:
    """Parse one file's bytes as ``kind`` (from `classify`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if kind in ("pypi", "npm", "os-release"):
            return Parsed(_base_kind(kind), skipped=1)
        text = data.decode("utf-8", errors="replace")  # dpkg descriptions may be Latin-1
    if kind in ("dpkg", "dpkg.d"):
        return _dpkg(text, status_required=kind == "dpkg")
    if kind == "apk":
        return _apk(text)
    if kind == "pypi":
        return _python(text)
    if kind == "npm":
        return _npm(text)
    return _os_release(text)


def _base_kind(kind: str) -> str:
    return "dpkg" if kind == "dpkg.d" else kind


def paragraphs(text: str) -> Iterator[dict[str, str] | None]:
    """Blank-line separated ``Field: value`` paragraphs (deb822 and apk); None if malformed.

    Hand-written rather than python-debian: five fields of a format this regular do not
    justify a dependency, and a malformed paragraph must be skipped, not fatal.
    """
    para: dict[str, str] = {}
    bad = False
    last: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if para or bad:
                yield None if bad else para
            para, bad, last = {}, False, None
        elif line[0] in " \t":
            bad = bad or last is None  # a continuation with nothing to continue
        elif ":" in line:
            last, _, value = line.partition(":")
            para[last.strip()] = value.strip()
        else:
            bad = True
    if para or bad:
        yield None if bad else para


def _installed(status: str) -> bool:
    words = status.split()
    return len(words) == 3 and words[1] == "ok" and words[2] == "installed"


def _dpkg(text: str, *, status_required: bool) -> Parsed:
    out = Parsed("dpkg")
    for para in paragraphs(text):
        if para is None:
            out.skipped += 1
            continue
        status = para.get("Status")
        if status is None and status_required:
            out.skipped += 1
            continue
        if status is not None and not _installed(status):
            continue
        name, version = para.get("Package"), para.get("Version")
        source = _DPKG_SOURCE.match(para.get("Source", "") or (name or ""))
        if not name or not version or source is None:
            out.skipped += 1
            continue
        out.records.append(
            Record("dpkg", name, version, source[1], source[2] or version, para.get("Architecture"))
        )
    return out


def _apk(text: str) -> Parsed:
    out = Parsed("apk")
    for para in paragraphs(text):
        if para is None or not para.get("P") or not para.get("V"):
            out.skipped += 1
            continue
        name, version = para["P"], para["V"]
        out.records.append(
            Record("apk", name, version, para.get("o") or name, version, para.get("A"))
        )
    return out


def _python(text: str) -> Parsed:
    headers = HeaderParser().parsestr(text)
    name, version = headers.get("Name"), headers.get("Version")
    if (
        not isinstance(name, str)
        or not isinstance(version, str)
        or not _PY_NAME.match(name.strip())
        or not version.strip()
        or len(version.split()) != 1
    ):
        return Parsed("pypi", skipped=1)
    return Parsed("pypi", records=[Record("pypi", name.strip(), version.strip())])


def _npm(text: str) -> Parsed:
    try:
        doc = json.loads(text)
    except ValueError:
        return Parsed("npm", skipped=1)
    if not isinstance(doc, dict):
        return Parsed("npm", skipped=1)
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return Parsed("npm")  # a package.json without both is not a package; not malformed
    return Parsed("npm", records=[Record("npm", name, version)])


def _os_release(text: str) -> Parsed:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        fields[key] = " ".join(words)
    if not fields.get("ID"):
        return Parsed("os-release", skipped=1)
    return Parsed("os-release", os_release=fields)


def os_ecosystem(os_id: str, version_id: str) -> str | None:
    """OSV's ecosystem for an os-release: ``Debian:12``, ``Alpine:v3.19``, ``Ubuntu:22.04``."""
    if os_id == "debian":
        major = version_id.split(".")[0]
        return f"Debian:{major}" if major.isdigit() else "Debian"
    if os_id == "ubuntu":
        return f"Ubuntu:{version_id}" if re.fullmatch(r"\d+\.\d+", version_id) else "Ubuntu"
    if os_id == "alpine":
        m = re.match(r"(\d+)\.(\d+)", version_id)
        return f"Alpine:v{m[1]}.{m[2]}" if m else "Alpine"
    return None
