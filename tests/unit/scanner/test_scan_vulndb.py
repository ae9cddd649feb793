"""The OSV database in (fake) Redis: import from dirs and zips, validation, indexing, lookups."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from service.domain.osv import (
    applicable_ecosystems,
    canonical_ecosystem,
    ecosystem_applies,
    normalize_name,
    validation_problem,
)
from service.scanner.osv_export import read_osv
from service.store.vulndb import VulnDB
from testkit import scan_fixtures as fx

pytestmark = pytest.mark.unit

FIXTURE_ECOSYSTEMS = {
    "Alpine:v3.19": 2,
    "Debian": 1,
    "Debian:11": 1,
    "Debian:12": 2,
    "PyPI": 2,
    "npm": 2,
}


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def db(redis_client: fakeredis.FakeRedis) -> VulnDB:
    return VulnDB(redis_client)


def record(id_: str, ecosystem: str = "PyPI", name: str = "pkg", **extra: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "modified": "2026-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}]}],
            }
        ],
        **extra,
    }


def test_import_directory(db: VulnDB, tmp_path: Path) -> None:
    fx.write_osv_dir(tmp_path / "osv", fx.osv_fixture_records())
    report = db.import_documents(read_osv(tmp_path / "osv"))
    assert (report.version, report.records, report.skipped, report.withdrawn) == (1, 10, 0, 0)
    assert report.ecosystems == FIXTURE_ECOSYSTEMS
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report.loaded_at)
    assert db.info() == {
        "records": 10,
        "ecosystems": FIXTURE_ECOSYSTEMS,
        "loaded_at": report.loaded_at,
        "version": 1,
    }


def test_import_zip_member_by_member_with_invalid_records_counted(
    db: VulnDB, tmp_path: Path
) -> None:
    good = fx.osv_fixture_records()
    members: dict[str, Any] = {f"{r['id']}.json": r for r in good}
    members.update(
        {
            "no-id.json": {"modified": "2026-01-01T00:00:00Z", "affected": []},
            "bad-range.json": record("BAD-1", ranges=None)
            | {
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "x"},
                        "ranges": [{"type": "WHATEVER", "events": [{"introduced": "0"}]}],
                    }
                ]
            },
            "bad-event.json": record("BAD-2")
            | {
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "x"},
                        "ranges": [
                            {"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]}
                        ],
                    }
                ]
            },
            "no-package.json": record("BAD-3") | {"affected": [{"ranges": []}]},
            "not-json.json": b"{this is not json",
            "README.txt": b"ignored: not a .json member",
        }
    )
    zip_path = fx.write_osv_zip(tmp_path / "PyPI" / "all.zip", members)
    report = db.import_documents(read_osv(zip_path))
    assert (report.records, report.skipped) == (10, 5)
    assert report.ecosystems == FIXTURE_ECOSYSTEMS
    assert any("bad-event.json: an event must have exactly one key" in e for e in report.errors)
    assert list(tmp_path.rglob("*")) == [tmp_path / "PyPI", zip_path]  # nothing extracted


def test_directory_with_zips_and_json_files_and_withdrawn(db: VulnDB, tmp_path: Path) -> None:
    fx.write_osv_zip(tmp_path / "Debian" / "all.zip", {"A.json": record("A", "Debian:12", "a")})
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "B.json").write_text(json.dumps(record("B", "npm", "b")))
    (tmp_path / "extra" / "W.json").write_text(
        json.dumps(record("W", "npm", "b", withdrawn="2026-01-02T00:00:00Z"))
    )
    report = db.import_documents(read_osv(tmp_path))
    assert (report.records, report.withdrawn, report.ecosystems) == (
        2,
        1,
        {"Debian:12": 1, "npm": 1},
    )
    assert [a["id"] for a in db.advisories_for("npm", "b")] == ["B"]


@pytest.mark.parametrize(
    ("rec", "problem"),
    [
        (record("OK"), None),
        ([], "not a JSON object"),
        ({"id": "X"}, "modified missing or not a string"),
        (record("X", aliases="CVE-1"), "aliases must be a list of strings"),
        (record("X") | {"affected": {"package": {}}}, "affected must be a list"),
        (
            record("X") | {"affected": [{"package": {"ecosystem": "PyPI"}}]},
            "affected[].package needs ecosystem and name",
        ),
        (
            record("X")
            | {"affected": [{"package": {"ecosystem": "PyPI", "name": "a"}, "versions": [1]}]},
            "affected[].versions must be a list of strings",
        ),
        (
            record("X")
            | {
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "a"},
                        "ranges": [{"type": "GIT", "events": [{"fixed": "ab"}]}],
                    }
                ]
            },
            "GIT range without repo",
        ),
        (
            record("X")
            | {
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "a"},
                        "ranges": [{"type": "SEMVER", "events": []}],
                    }
                ]
            },
            "range without events",
        ),
        (
            record("X")
            | {
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": "a"},
                        "ranges": [{"type": "SEMVER", "events": [{"broken": "1"}]}],
                    }
                ]
            },
            "bad event {'broken': '1'}",
        ),
    ],
)
def test_validation_problem(rec: Any, problem: str | None) -> None:
    assert validation_problem(rec) == problem


def test_lookup_is_per_ecosystem_release_and_source_name(db: VulnDB, tmp_path: Path) -> None:
    db.import_documents(read_osv(fx.write_osv_dir(tmp_path, fx.osv_fixture_records())))
    assert [a["id"] for a in db.advisories_for("Debian:12", "openssl")] == ["DEBIAN-CVE-2023-5678"]
    assert [a["id"] for a in db.advisories_for("Debian:11", "openssl")] == ["DEBIAN-CVE-2023-0001"]
    assert [a["id"] for a in db.advisories_for("Debian:12", "zlib")] == ["DEBIAN-CVE-2022-37434"]
    assert db.advisories_for("Debian:12", "libssl3") == []  # binary names are not keys
    assert [a["id"] for a in db.advisories_for("Alpine:v3.19", "openssl")] == [
        "ALPINE-CVE-2023-6129"
    ]
    assert db.advisories_for("Alpine:v3.18", "openssl") == []
    assert [a["id"] for a in db.advisories_for("PyPI", "Jinja2")] == ["GHSA-h5c8-rqwp-cp95"]
    assert [a["id"] for a in db.advisories_for("npm", "lodash")] == [
        "GHSA-35jh-r3h4-6jhm",
        "GHSA-p6mc-m468-83gw",
    ]


def test_a_multi_package_record_is_narrowed_to_the_looked_up_package(
    db: VulnDB, tmp_path: Path
) -> None:
    rec = record("MULTI")
    rec["affected"].append(
        {"package": {"ecosystem": "PyPI", "name": "Other_Pkg"}, "versions": ["1.0"]}
    )
    db.import_documents(read_osv(fx.write_osv_dir(tmp_path, [rec])))
    (adv,) = db.advisories_for("PyPI", "other.pkg")
    assert adv["affected"] == [rec["affected"][1]]


def test_every_key_is_prefixed_and_reimport_replaces_and_drops_old_generations(
    db: VulnDB, redis_client: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    redis_client.set("unrelated", "1")
    for n in range(1, 4):
        d = fx.write_osv_dir(tmp_path / str(n), [record(f"GEN-{n}", name=f"only-{n}")])
        assert db.import_documents(read_osv(d)).version == n
    keys = set(redis_client.keys("*")) - {"unrelated"}
    assert keys and all(k.startswith("tw:vulndb:") for k in keys)
    generations = {m[1] for k in keys if (m := re.match(r"tw:vulndb:(g\d+):", k))}
    assert generations == {"g2", "g3"}
    assert [a["id"] for a in db.advisories_for("PyPI", "only-3")] == ["GEN-3"]
    assert db.advisories_for("PyPI", "only-1") == []
    assert [a["id"] for a in db.advisories_for("PyPI", "only-2", version=2)] == ["GEN-2"]
    assert db.info()["version"] == 3


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_a_path_without_osv_files_is_refused_and_the_live_db_kept(
    db: VulnDB, tmp_path: Path, where: str
) -> None:
    db.import_documents(read_osv(fx.write_osv_dir(tmp_path / "good", [record("KEEP")])))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no records here")
    with pytest.raises(FileNotFoundError, match="OSV"):
        db.import_documents(read_osv(tmp_path / where))
    assert (db.info()["version"], db.info()["records"]) == (1, 1)


def test_empty_database(db: VulnDB) -> None:
    assert db.info() == {"records": 0, "ecosystems": {}, "loaded_at": None, "version": None}
    assert db.advisories_for("PyPI", "x") == []


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("Debian:12", "Debian:12"),
        ("debian", "Debian"),
        ("Ubuntu:22.04:LTS", "Ubuntu:22.04"),
        ("pypi", "PyPI"),
        ("NPM", "npm"),
        ("Alpine:v3.19", "Alpine:v3.19"),
        ("Go", "Go"),
    ],
)
def test_canonical_ecosystem(given: str, canonical: str) -> None:
    assert canonical_ecosystem(given) == canonical


def test_ecosystem_applicability() -> None:
    assert applicable_ecosystems("Debian:12") == ["Debian:12", "Debian"]
    assert applicable_ecosystems("PyPI") == ["PyPI"]
    assert ecosystem_applies("Debian", "Debian:12")
    assert ecosystem_applies("Alpine", "Alpine:v3.19")
    assert not ecosystem_applies("Debian:11", "Debian:12")
    assert not ecosystem_applies("Debian:12", "Debian")
    assert not ecosystem_applies("Alpine:v3.18", "Alpine:v3.19")


def test_normalize_name() -> None:
    assert normalize_name("PyPI", "Foo.Bar_baz--Qux") == "foo-bar-baz-qux"
    assert normalize_name("npm", "@Scope/Name") == "@Scope/Name"
    assert normalize_name("Debian:12", "libssl3") == "libssl3"
