"""Package inventory of an image: its layers applied in order, with OCI whiteout semantics."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

from packageurl import PackageURL
from packaging.utils import canonicalize_name

from service.scanner.errors import FileTooLarge
from service.scanner.layers import LayerEntry, Readable, ReadFn, iter_layer_files
from service.scanner.parsers import OS_RELEASE_PATHS, Parsed, Record, classify, os_ecosystem, parse

log = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OS_PURL = {"dpkg": ("deb", "debian"), "apk": ("apk", "alpine")}
_GENERIC = {"dpkg": "Debian", "apk": "Alpine", "pypi": "PyPI", "npm": "npm"}


@dataclass(frozen=True)
class Package:
    """One installed package, attributed to the layer that introduced it."""

    name: str
    version: str
    ecosystem: str
    purl: str
    layer_digest: str
    source_name: str | None
    source_version: str | None
    path: str

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class OsRelease:
    """The distribution an image claims, and OSV's ecosystem name for it."""

    id: str
    version_id: str
    pretty_name: str
    ecosystem: str | None
    path: str

    def to_dict(self) -> dict[str, str | None]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class Inventory:
    """Every package found, the os-release (if any) and how many malformed entries were skipped."""

    packages: list[Package] = field(default_factory=list)
    os_release: OsRelease | None = None
    skipped: int = 0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "packages": [p.to_dict() for p in self.packages],
            "os_release": self.os_release.to_dict() if self.os_release else None,
            "skipped": self.skipped,
        }


@dataclass
class _File:
    """A package-database file alive in the merged filesystem; ``layers`` parallels records."""

    parsed: Parsed
    layer: str
    layers: list[str]


def _ancestors(path: str) -> Iterator[str]:
    parts = path.split("/")
    yield ""
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


class _Overlay:
    """The merged view of the package files seen so far; only those files are kept."""

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.dirs: set[str] = set()

    def apply(self, digest: str, entries: Iterator[LayerEntry]) -> None:
        """Apply one layer: its whiteouts hide lower files, its own files then land on top."""
        gone: set[str] = set()  # whiteout targets and replaced paths: the path and below
        opaque: set[str] = set()  # directories whose lower content vanishes
        written: dict[str, Parsed] = {}
        for path, info, read in entries:
            head, _, base = path.rpartition("/")
            if base == OPAQUE_MARKER:
                opaque.add(head)
                continue
            if base.startswith(WHITEOUT_PREFIX):
                if not base.startswith(WHITEOUT_PREFIX * 2):  # .wh..wh.* is aufs bookkeeping
                    gone.add(f"{head}/{base[4:]}" if head else base[4:])
                continue
            if path in self.files or (not info.isdir() and path in self.dirs):
                gone.add(path)  # a file or link replaces a lower file or directory
            kind = classify(path)
            if kind is not None and info.isreg():
                written[path] = _read(kind, path, read)
        whiteouts = (gone - written.keys(), opaque)
        survivors = {p: f for p, f in self.files.items() if not _hidden(p, gone, opaque)}
        for path, parsed in written.items():
            before = self.files.get(path) if not _hidden(path, *whiteouts) else None
            survivors[path] = _File(parsed, digest, _inherit(parsed, digest, before))
        self.files = survivors
        self.dirs = {a for p in survivors for a in _ancestors(p)}


def _hidden(path: str, gone: set[str], opaque: set[str]) -> bool:
    if path in gone:
        return True
    return any(a in gone or a in opaque for a in _ancestors(path))


def _inherit(parsed: Parsed, digest: str, before: _File | None) -> list[str]:
    """A package already in the file it replaces keeps its original layer (rewritten dbs)."""
    if before is None:
        return [digest] * len(parsed.records)
    earlier = {
        r.identity: layer for r, layer in zip(before.parsed.records, before.layers, strict=True)
    }
    return [earlier.get(r.identity, digest) for r in parsed.records]


def _read(kind: str, path: str, read: ReadFn) -> Parsed:
    try:
        data = read()
    except FileTooLarge as exc:
        log.warning("skipping package file: %s", exc)
        return Parsed(kind, skipped=1)
    return parse(kind, data)


def build_inventory(layers: Iterable[tuple[str, Iterator[LayerEntry]]]) -> Inventory:
    """Inventory of an image from ``(layer digest, iter_layer_files(...))`` pairs, base first."""
    overlay = _Overlay()
    for digest, entries in layers:
        overlay.apply(digest, entries)
    os_release = _os_release(overlay.files)
    packages: list[Package] = []
    skipped = 0
    for path, f in overlay.files.items():
        skipped += f.parsed.skipped
        for record, layer in zip(f.parsed.records, f.layers, strict=True):
            packages.append(_package(record, layer, path, os_release))
    packages.sort(key=lambda p: (p.ecosystem, p.name, p.version, p.path))
    return Inventory(packages=packages, os_release=os_release, skipped=skipped)


def inventory_of_streams(
    layers: Iterable[tuple[str, str, Readable]], *, max_bytes: int
) -> Inventory:
    """`build_inventory` over ``(digest, media type, blob stream)`` triples, base layer first."""
    return build_inventory(
        (digest, iter_layer_files(stream, media_type, max_bytes=max_bytes))
        for digest, media_type, stream in layers
    )


def _os_release(files: dict[str, _File]) -> OsRelease | None:
    for path in OS_RELEASE_PATHS:
        f = files.get(path)
        if f is not None and f.parsed.os_release:
            fields = f.parsed.os_release
            os_id, version_id = fields["ID"].lower(), fields.get("VERSION_ID", "")
            return OsRelease(
                id=os_id,
                version_id=version_id,
                pretty_name=fields.get("PRETTY_NAME", ""),
                ecosystem=os_ecosystem(os_id, version_id),
                path=path,
            )
    return None


def _package(record: Record, layer: str, path: str, os_release: OsRelease | None) -> Package:
    return Package(
        name=record.name,
        version=record.version,
        ecosystem=_ecosystem(record.kind, os_release),
        purl=package_purl(record, os_release),
        layer_digest=layer,
        source_name=record.source_name,
        source_version=record.source_version,
        path=path,
    )


def _ecosystem(kind: str, os_release: OsRelease | None) -> str:
    generic = _GENERIC[kind]
    if kind in _OS_PURL and os_release is not None and os_release.ecosystem:
        family = os_release.ecosystem.split(":")[0]
        if (kind == "apk") == (family == "Alpine"):
            return os_release.ecosystem
    return generic


def package_purl(record: Record, os_release: OsRelease | None) -> str:
    """The package URL of a record (``pkg:deb/debian/...?distro=debian-12`` and friends)."""
    if record.kind == "pypi":
        return PackageURL("pypi", None, canonicalize_name(record.name), record.version).to_string()
    if record.kind == "npm":
        scope, _, name = record.name.rpartition("/")
        return PackageURL("npm", scope or None, name, record.version).to_string()
    purl_type, namespace = _OS_PURL[record.kind]
    qualifiers: dict[str, str] = {}
    if record.arch:
        qualifiers["arch"] = record.arch
    if os_release is not None:
        if record.kind == "dpkg" and os_release.id in ("debian", "ubuntu"):
            namespace = os_release.id
        if os_release.version_id and os_release.id == namespace:
            qualifiers["distro"] = f"{os_release.id}-{os_release.version_id}"
    return PackageURL(purl_type, namespace, record.name, record.version, qualifiers).to_string()
