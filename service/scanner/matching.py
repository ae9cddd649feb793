"""OSV range semantics in each ecosystem's own version ordering, severity, and findings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError
from univers.versions import (
    AlpineLinuxVersion,
    DebianVersion,
    InvalidVersion,
    PypiVersion,
    SemverVersion,
    Version,
)

from service.domain.osv import canonical_ecosystem, ecosystem_applies, normalize_name
from service.scanner.inventory import Inventory, Package
from service.store.vulndb import VulnDB

SEVERITIES = ("critical", "high", "medium", "low", "unknown")
_ORDERINGS: dict[str, type[Version]] = {
    "Debian": DebianVersion,
    "Ubuntu": DebianVersion,
    "Alpine": AlpineLinuxVersion,
    "PyPI": PypiVersion,
    "npm": SemverVersion,
    "SEMVER": SemverVersion,
}
_LABELS = {
    "critical": "critical",
    "high": "high",
    "important": "high",
    "moderate": "medium",
    "medium": "medium",
    "low": "low",
    "negligible": "low",
    "unimportant": "low",
}
_OS_ECOSYSTEMS = {"Debian", "Ubuntu", "Alpine"}


# --------------------------------------------------------------------------- versions


@lru_cache(maxsize=65536)
def parse_version(ordering: str, text: str) -> Version | None:
    """``text`` in an ordering (Debian, Ubuntu, Alpine, PyPI, npm, SEMVER); None if invalid."""
    cls = _ORDERINGS.get(ordering)
    if cls is None:
        return None
    try:
        return cls(text.strip())
    except InvalidVersion:
        return None


def ordering_for(ecosystem: str, range_type: str = "ECOSYSTEM") -> str | None:
    """Which version ordering evaluates a range of ``range_type`` for ``ecosystem``."""
    if range_type == "SEMVER":
        return "SEMVER"
    if range_type != "ECOSYSTEM":
        return None  # GIT ranges name commits, not versions an image carries
    base = canonical_ecosystem(ecosystem).partition(":")[0]
    return base if base in _ORDERINGS else None


_MIN, _VERSION, _MAX = 0, 1, 2


def _events(rng: dict[str, Any], ordering: str) -> list[tuple[int, Any, int, str, str]] | None:
    """Events sorted by version; None when one of them does not parse (range unusable)."""
    out: list[tuple[int, Any, int, str, str]] = []
    for index, event in enumerate(rng.get("events", [])):
        ((kind, value),) = event.items()
        if kind == "introduced" and value == "0":
            out.append((_MIN, 0, index, kind, value))
        elif kind == "limit" and value == "*":
            out.append((_MAX, 0, index, kind, value))
        else:
            parsed = parse_version(ordering, value)
            if parsed is None:
                return None
            out.append((_VERSION, parsed, index, kind, value))
    out.sort(key=lambda e: e[:3])
    return out


def range_affects(rng: dict[str, Any], ordering: str, version: Version) -> tuple[bool, str | None]:
    """OSV's evaluation of one range: (affected, lowest ``fixed`` above ``version``)."""
    events = _events(rng, ordering)
    if events is None:
        return False, None
    # Only `<` is trusted: univers' AlpineLinuxVersion (via GentooVersion) overrides __lt__,
    # __gt__ and __eq__ but not __le__/__ge__, which then compare the wrong fields.
    vulnerable = False
    for rank, at, _, kind, _ in events:
        reached = rank == _MIN or (rank == _VERSION and not version < at)
        if kind == "introduced" and reached:
            vulnerable = True
        elif kind == "fixed" and reached:
            vulnerable = False
        elif kind == "last_affected" and rank == _VERSION and at < version:
            vulnerable = False
    limits = [(rank, at) for rank, at, _, kind, _ in events if kind == "limit"]
    if limits and not any(rank == _MAX or version < at for rank, at in limits):
        vulnerable = False
    fixes = [
        (at, value)
        for rank, at, _, kind, value in events
        if kind == "fixed" and rank == _VERSION and version < at
    ]
    return vulnerable, (min(fixes, key=lambda f: f[0])[1] if fixes else None)


def _entry_affects(entry: dict[str, Any], ecosystem: str, version: str) -> tuple[bool, str | None]:
    """An affected[] entry: explicit ``versions`` or any range; fixed from the ranges that hit."""
    listed = entry.get("versions", [])
    hit = version in listed
    in_fixes: list[tuple[Version, str]] = []
    other_fixes: list[tuple[Version, str]] = []
    for rng in entry.get("ranges", []):
        ordering = ordering_for(ecosystem, rng.get("type", ""))
        parsed = parse_version(ordering, version) if ordering else None
        if ordering is None or parsed is None:
            continue
        hit = hit or any(parse_version(ordering, v) == parsed for v in listed)
        in_range, fixed = range_affects(rng, ordering, parsed)
        hit = hit or in_range
        fixed_at = parse_version(ordering, fixed) if fixed else None
        if fixed and fixed_at is not None:
            (in_fixes if in_range else other_fixes).append((fixed_at, fixed))
    fixes = in_fixes or other_fixes
    if not hit or not fixes:
        return hit, None
    try:
        return True, min(fixes, key=lambda f: f[0])[1]
    except TypeError:  # SEMVER and ECOSYSTEM ranges in one entry do not compare
        return True, fixes[0][1]


def _match(
    advisory: dict[str, Any], ecosystem: str, version: str, name: str | None
) -> tuple[bool, str | None, dict[str, Any] | None]:
    for entry in advisory.get("affected", []):
        pkg = entry.get("package", {})
        if not ecosystem_applies(pkg.get("ecosystem", ""), ecosystem):
            continue
        if name is not None and normalize_name(ecosystem, pkg.get("name", "")) != normalize_name(
            ecosystem, name
        ):
            continue
        hit, fixed = _entry_affects(entry, ecosystem, version)
        if hit:
            return True, fixed, entry
    return False, None, None


def affected(
    advisory: dict[str, Any], ecosystem: str, version: str, *, name: str | None = None
) -> tuple[bool, str | None]:
    """Whether ``version`` in ``ecosystem`` (and package ``name``, if given) is affected."""
    hit, fixed, _ = _match(advisory, ecosystem, version, name)
    return hit, fixed


# --------------------------------------------------------------------------- severity


def score_severity(score: float) -> str:
    """CVSS v3/v4 base score -> critical/high/medium/low (unknown for 0)."""
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    return "low" if score > 0 else "unknown"


def cvss_severity(kind: str, vector: str) -> str:
    """Severity from one OSV ``severity[]`` entry (CVSS_V2/V3/V4 vector, or a distro label)."""
    try:
        if kind == "CVSS_V3":
            return score_severity(float(CVSS3(vector).scores()[0]))
        if kind == "CVSS_V4":
            return score_severity(float(CVSS4(vector).base_score))
        if kind == "CVSS_V2":  # v2 has no critical band: 7.0+ is high
            sev = score_severity(float(CVSS2(vector).scores()[0]))
            return max(sev, "high", key=SEVERITIES.index)
    except (CVSSError, ValueError, TypeError):
        return "unknown"
    return label_severity(vector) if kind == "Ubuntu" else "unknown"


def label_severity(label: Any) -> str:
    """A database's word (``MODERATE``, ``Important``, ...) as critical/high/medium/low/unknown."""
    return _LABELS.get(label.strip().lower(), "unknown") if isinstance(label, str) else "unknown"


def _from_list(items: Any) -> str:
    if not isinstance(items, list):
        return "unknown"
    found = {i.get("type"): i.get("score") for i in items if isinstance(i, dict)}
    for kind in ("CVSS_V3", "CVSS_V4", "CVSS_V2", "Ubuntu"):
        score = found.get(kind)
        if isinstance(score, str):
            sev = cvss_severity(kind, score)
            if sev != "unknown":
                return sev
    return "unknown"


def _from_dict(specific: Any) -> str:
    if not isinstance(specific, dict):
        return "unknown"
    sev = label_severity(specific.get("severity"))
    return sev if sev != "unknown" else label_severity(specific.get("urgency"))


def severity(advisory: dict[str, Any], entry: dict[str, Any] | None = None) -> str:
    """Normalised severity; the matched affected[] entry's own data is the most specific."""
    candidates = []
    if entry is not None:
        candidates += [
            lambda: _from_list(entry.get("severity")),
            lambda: _from_dict(entry.get("ecosystem_specific")),
            lambda: _from_dict(entry.get("database_specific")),
        ]
    candidates += [
        lambda: _from_dict(advisory.get("database_specific")),
        lambda: _from_list(advisory.get("severity")),
    ]
    return next((s for s in (c() for c in candidates) if s != "unknown"), "unknown")


# --------------------------------------------------------------------------- findings


@dataclass(frozen=True)
class Finding:
    """One advisory affecting one installed package (API.md's findings item, plus purl)."""

    id: str
    aliases: tuple[str, ...]
    package: str
    ecosystem: str
    installed_version: str
    fixed_version: str | None
    severity: str
    layer: str
    purl: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form in API.md's shape."""
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "package": self.package,
            "ecosystem": self.ecosystem,
            "installed_version": self.installed_version,
            "fixed_version": self.fixed_version,
            "severity": self.severity,
            "layer": self.layer,
            "purl": self.purl,
        }


def match_key(package: Package) -> tuple[str, str, str]:
    """(ecosystem, name, version) an advisory is looked up and evaluated with.

    Distro advisories (Debian, Ubuntu, Alpine) name SOURCE packages and source versions.
    """
    base = canonical_ecosystem(package.ecosystem).partition(":")[0]
    if base in _OS_ECOSYSTEMS and package.source_name:
        return package.ecosystem, package.source_name, package.source_version or package.version
    return package.ecosystem, package.name, package.version


def match_inventory(inventory: Inventory, vulndb: VulnDB) -> list[Finding]:
    """Findings for every package, one per (advisory id, package, version), most severe first."""
    generation = vulndb.current_version()
    keys = {pkg: match_key(pkg) for pkg in inventory.packages}
    advisories = vulndb.advisories_for_many(
        ((eco, name) for eco, name, _ in keys.values()), version=generation
    )
    found: dict[tuple[str, str, str], Finding] = {}
    for pkg, (eco, name, version) in keys.items():
        for adv in advisories[(eco, name)]:
            hit, fixed, entry = _match(adv, eco, version, name)
            if not hit or (adv["id"], pkg.name, pkg.version) in found:
                continue
            found[(adv["id"], pkg.name, pkg.version)] = Finding(
                id=adv["id"],
                aliases=tuple(adv.get("aliases", [])),
                package=pkg.name,
                ecosystem=pkg.ecosystem,
                installed_version=pkg.version,
                fixed_version=fixed,
                severity=severity(adv, entry),
                layer=pkg.layer_digest,
                purl=pkg.purl,
            )
    return sorted(
        found.values(),
        key=lambda f: (SEVERITIES.index(f.severity), f.id, f.package, f.installed_version),
    )
