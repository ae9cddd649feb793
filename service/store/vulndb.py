"""The offline OSV vulnerability database in Redis, indexed per (ecosystem, package name).

Each import builds a complete new generation of keys and then switches the
``current`` pointer in one transaction, so a scan never sees half an import; the
generation before stays readable for scans still running and older ones are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis
from packaging.utils import canonicalize_name

from service.store import key

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 16 * 1024 * 1024
_BATCH = 500
_RANGE_TYPES = {"ECOSYSTEM", "SEMVER", "GIT"}
_EVENTS = {"introduced", "fixed", "last_affected", "limit"}
_BASES = {"debian": "Debian", "ubuntu": "Ubuntu", "alpine": "Alpine", "pypi": "PyPI", "npm": "npm"}


# --------------------------------------------------------------------------- naming rules


def canonical_ecosystem(ecosystem: str) -> str:
    """OSV's ecosystem spelling, release kept: ``debian:12`` -> ``Debian:12``, LTS tag dropped."""
    base, sep, release = ecosystem.strip().partition(":")
    base = _BASES.get(base.lower(), base)
    if base == "Ubuntu" and release.endswith(":LTS"):
        release = release[: -len(":LTS")]
    return f"{base}{sep}{release}" if release else base


def applicable_ecosystems(ecosystem: str) -> list[str]:
    """Advisory ecosystems covering an inventory ecosystem: ``Debian:12`` -> also ``Debian``."""
    eco = canonical_ecosystem(ecosystem)
    base = eco.partition(":")[0]
    return [eco, base] if base != eco else [eco]


def ecosystem_applies(advisory_ecosystem: str, inventory_ecosystem: str) -> bool:
    """True when an advisory's ecosystem covers a package of ``inventory_ecosystem``."""
    return canonical_ecosystem(advisory_ecosystem) in applicable_ecosystems(inventory_ecosystem)


def normalize_name(ecosystem: str, name: str) -> str:
    """The package name used for matching: PEP 503 for PyPI, as is elsewhere."""
    if canonical_ecosystem(ecosystem) == "PyPI":
        return canonicalize_name(name)
    return name.strip()


# --------------------------------------------------------------------------- validation


def _strs(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _range_problem(rng: Any) -> str | None:
    if not isinstance(rng, dict) or rng.get("type") not in _RANGE_TYPES:
        return "range type must be ECOSYSTEM, SEMVER or GIT"
    if rng["type"] == "GIT" and not isinstance(rng.get("repo"), str):
        return "GIT range without repo"
    events = rng.get("events")
    if not isinstance(events, list) or not events:
        return "range without events"
    for event in events:
        if not isinstance(event, dict) or len(event) != 1:
            return "an event must have exactly one key"
        ((name, value),) = event.items()
        if name not in _EVENTS or not isinstance(value, str) or not value:
            return f"bad event {event!r}"
    return None


def validation_problem(record: Any) -> str | None:
    """Why ``record`` is not a usable OSV record (the minimal schema), or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for name in ("id", "modified"):
        if not isinstance(record.get(name), str) or not record[name]:
            return f"{name} missing or not a string"
    for name in ("aliases", "related"):
        if name in record and not _strs(record[name]):
            return f"{name} must be a list of strings"
    affected = record.get("affected", [])
    if not isinstance(affected, list):
        return "affected must be a list"
    for entry in affected:
        pkg = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(pkg, dict) or not all(
            isinstance(pkg.get(n), str) and pkg[n] for n in ("ecosystem", "name")
        ):
            return "affected[].package needs ecosystem and name"
        if not isinstance(entry.get("ranges", []), list):
            return "affected[].ranges must be a list"
        if not _strs(entry.get("versions", [])):
            return "affected[].versions must be a list of strings"
        problem = next(filter(None, map(_range_problem, entry.get("ranges", []))), None)
        if problem:
            return problem
    return None


# --------------------------------------------------------------------------- reading files


def osv_files(path: str | os.PathLike[str]) -> list[Path]:
    """The .json and .zip files an import would read; FileNotFoundError if there are none."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no OSV database at {root}")
    found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix in (".json", ".zip")]
    if not files:
        raise FileNotFoundError(f"no .json or .zip OSV files under {root}")
    return files


def iter_osv_documents(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """Yield ``(source, parsed JSON or None)`` for every .json file and zip member under path."""
    for file in osv_files(path):
        if file.suffix == ".json":
            yield str(file), _load(file.read_bytes(), str(file), file.stat().st_size)
        elif file.suffix == ".zip":
            yield from _zip_documents(file)


def _zip_documents(file: Path) -> Iterator[tuple[str, Any]]:
    with zipfile.ZipFile(file) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            source = f"{file}!{info.filename}"
            if info.file_size > MAX_RECORD_BYTES:
                yield source, None
                continue
            with zf.open(info) as fh:  # one member at a time, never extracted to disk
                yield source, _load(fh.read(MAX_RECORD_BYTES + 1), source, info.file_size)


def _load(raw: bytes, source: str, size: int) -> Any:
    if size > MAX_RECORD_BYTES or len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        log.debug("not JSON: %s", source)
        return None


# --------------------------------------------------------------------------- the store


@dataclass
class ImportReport:
    """What an import loaded: valid records per ecosystem, and what it skipped and why."""

    version: int
    loaded_at: str
    records: int = 0
    skipped: int = 0
    withdrawn: int = 0
    ecosystems: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class VulnDB:
    """OSV advisories in Redis under ``tw:vulndb:``; lookups cost one hash per ecosystem."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def _key(self, generation: int | str, *parts: str) -> str:
        return key("vulndb", f"g{generation}", *parts)

    def current_version(self) -> int | None:
        """The generation readers use now, or None before the first import."""
        raw = cast(str | None, self.r.get(key("vulndb", "current")))
        return int(raw) if raw is not None else None

    def import_path(self, path: str | os.PathLike[str]) -> ImportReport:
        """Load a directory of OSV .json files and/or all.zip archives as the new database.

        Raises FileNotFoundError (before touching Redis) when the path holds no OSV files,
        so a wrong path never replaces the live database with an empty one.
        """
        osv_files(path)
        generation = int(cast(int, self.r.incr(key("vulndb", "generation"))))
        self.r.sadd(key("vulndb", "generations"), generation)
        now = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        report = ImportReport(version=generation, loaded_at=now)
        counts: Counter[str] = Counter()
        seen: set[str] = set()
        pipe = self.r.pipeline(transaction=False)
        for n, (source, doc) in enumerate(iter_osv_documents(path), start=1):
            for record in doc if isinstance(doc, list) else [doc]:
                self._add(pipe, generation, source, record, report, counts, seen)
            if n % _BATCH == 0:
                pipe.execute()
        pipe.execute()
        report.records = len(seen)
        report.ecosystems = dict(sorted(counts.items()))
        self._switch(generation, report)
        return report

    def _add(
        self,
        pipe: Any,
        generation: int,
        source: str,
        record: Any,
        report: ImportReport,
        counts: Counter[str],
        seen: set[str],
    ) -> None:
        problem = validation_problem(record)
        if problem is not None:
            report.skipped += 1
            if len(report.errors) < 20:
                report.errors.append(f"{source}: {problem}")
            return
        if record.get("withdrawn"):
            report.withdrawn += 1
            return
        by_package: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for entry in record.get("affected", []):
            eco = canonical_ecosystem(entry["package"]["ecosystem"])
            name = normalize_name(eco, entry["package"]["name"])
            by_package.setdefault((eco, name), []).append(entry)
        if record["id"] not in seen:
            counts.update({eco for eco, _ in by_package})
            seen.add(record["id"])
        for (eco, name), entries in by_package.items():
            hkey = self._key(generation, "pkg", f"{eco}|{name}")
            pipe.hset(hkey, record["id"], json.dumps({**record, "affected": entries}))
            pipe.sadd(self._key(generation, "keys"), hkey)

    def _switch(self, generation: int, report: ImportReport) -> None:
        meta = {
            "records": report.records,
            "ecosystems": json.dumps(report.ecosystems),
            "loaded_at": report.loaded_at,
            "version": generation,
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(self._key(generation, "meta"))
        pipe.hset(self._key(generation, "meta"), mapping=meta)
        pipe.set(key("vulndb", "current"), generation, get=True)
        previous = pipe.execute()[-1]
        # Keep the generation a running scan may still read; drop older and abandoned ones.
        keep = {str(generation), str(previous)}
        for old in cast(set[str], self.r.smembers(key("vulndb", "generations"))):
            if old not in keep:
                self._drop(int(old))

    def _drop(self, generation: int) -> None:
        """Delete one old (or abandoned) generation's keys."""
        index = self._key(generation, "keys")
        batch: list[str] = []
        for k in self.r.sscan_iter(index, count=_BATCH):
            batch.append(k)
            if len(batch) >= _BATCH:
                self.r.delete(*batch)
                batch = []
        self.r.delete(*batch, index, self._key(generation, "meta"))
        self.r.srem(key("vulndb", "generations"), generation)

    def info(self) -> dict[str, Any]:
        """``{"records", "ecosystems", "loaded_at", "version"}`` of the current database."""
        generation = self.current_version()
        if generation is None:
            return {"records": 0, "ecosystems": {}, "loaded_at": None, "version": None}
        meta = cast(dict[str, str], self.r.hgetall(self._key(generation, "meta")))
        return {
            "records": int(meta.get("records", 0)),
            "ecosystems": json.loads(meta.get("ecosystems", "{}")),
            "loaded_at": meta.get("loaded_at"),
            "version": generation,
        }

    def advisories_for(
        self, ecosystem: str, name: str, *, version: int | None = None
    ) -> list[dict[str, Any]]:
        """Advisories (affected[] narrowed to this package) for one inventory package."""
        return self.advisories_for_many([(ecosystem, name)], version=version)[(ecosystem, name)]

    def advisories_for_many(
        self, packages: Iterable[tuple[str, str]], *, version: int | None = None
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """`advisories_for` for many (ecosystem, name) pairs in one round trip."""
        pairs = list(dict.fromkeys(packages))
        generation = version if version is not None else self.current_version()
        if generation is None:
            return {pair: [] for pair in pairs}
        pipe = self.r.pipeline(transaction=False)
        shape = []
        for eco, name in pairs:
            ecos = applicable_ecosystems(eco)
            shape.append(len(ecos))
            for adv_eco in ecos:
                norm = normalize_name(adv_eco, name)
                pipe.hgetall(self._key(generation, "pkg", f"{adv_eco}|{norm}"))
        results = iter(pipe.execute())
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pair, n in zip(pairs, shape, strict=True):
            merged: dict[str, dict[str, Any]] = {}
            for _ in range(n):
                for adv_id, raw in sorted(next(results).items()):
                    adv = json.loads(raw)
                    if adv_id in merged:  # same advisory for Debian:12 and for Debian
                        merged[adv_id]["affected"] += adv["affected"]
                    else:
                        merged[adv_id] = adv
            out[pair] = [merged[k] for k in sorted(merged)]
        return out


class VulnDBSource:
    """Which source the database was last imported from, and the import lock."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def lock(self) -> Any:
        """Serialise imports across processes."""
        return self.r.lock(key("lock", "vulndb-import"), timeout=3600, blocking_timeout=3600)

    def mark(self) -> str | None:
        """The fingerprint of the last imported source."""
        return cast(str | None, self.r.get(key("vulndb", "source")))

    def set_mark(self, value: str) -> None:
        """Remember the fingerprint of what was just imported."""
        self.r.set(key("vulndb", "source"), value)
