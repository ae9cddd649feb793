"""The offline OSV vulnerability database in Redis, indexed per (ecosystem, package name).

Records are validated by service.domain.osv and read from disk by service.scanner.osv_export;
this module only stores and looks them up.

Each import builds a complete new generation of keys and then switches the
``current`` pointer in one transaction, so a scan never sees half an import; the
generation before stays readable for scans still running and older ones are deleted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

from service.domain.osv import (
    applicable_ecosystems,
    canonical_ecosystem,
    normalize_name,
    validation_problem,
)
from service.store import key

_BATCH = 500


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

    def import_documents(self, documents: Iterable[tuple[str, Any]]) -> ImportReport:
        """Load ``(source, parsed JSON or None)`` documents (service.scanner.osv_export's
        `read_osv`) as the new database: each a record or a list of records; invalid ones
        are skipped and counted."""
        generation = int(cast(int, self.r.incr(key("vulndb", "generation"))))
        self.r.sadd(key("vulndb", "generations"), generation)
        now = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        report = ImportReport(version=generation, loaded_at=now)
        counts: Counter[str] = Counter()
        seen: set[str] = set()
        pipe = self.r.pipeline(transaction=False)
        for n, (source, doc) in enumerate(documents, start=1):
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
