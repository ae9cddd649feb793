"""Version ordering per ecosystem, OSV range semantics, and severity from labels and CVSS."""

from __future__ import annotations

from typing import Any

import pytest

from service.scanner.matching import (
    affected,
    cvss_severity,
    label_severity,
    parse_version,
    score_severity,
    severity,
)

pytestmark = pytest.mark.unit

V3_CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"  # 9.8
V3_HIGH = "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"  # 7.2
V3_MEDIUM = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"  # 5.3
V30_LOW = "CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N"  # 3.1
V3_NONE = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N"  # 0.0
V4_CRITICAL = "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"  # 9.3
V2_TEN = "AV:N/AC:L/Au:N/C:C/I:C/A:C"  # 10.0, but v2 tops out at "high"

# (ordering, lower, higher): published examples of each ecosystem's rules.
ORDER = [
    ("Debian", "1.0~rc1", "1.0"),
    ("Debian", "2.0", "1:0.9"),
    ("Debian", "1.2-1", "1.2-1+deb12u1"),
    ("Debian", "1.0~~", "1.0~"),
    ("Debian", "2.36-9+deb12u4", "2.36-9+deb12u10"),
    ("Debian", "3.0.11-1~deb12u1", "3.0.11-1~deb12u2"),
    ("Ubuntu", "5.1-6ubuntu1", "5.1-6ubuntu1.1"),
    ("Alpine", "1.2.3-r0", "1.2.3-r1"),
    ("Alpine", "1.2.3_rc1", "1.2.3"),
    ("Alpine", "1.2.3", "1.2.3_p1"),
    ("Alpine", "1.2.3_alpha1", "1.2.3_beta1"),
    ("Alpine", "1.9", "1.10"),
    ("Alpine", "3.1.4-r1", "3.1.4-r3"),
    ("PyPI", "1.0rc1", "1.0"),
    ("PyPI", "1.0", "1.0.post1"),
    ("PyPI", "1.0.dev1", "1.0a1"),
    ("PyPI", "2.0", "1!0.1"),
    ("PyPI", "1.9", "1.10"),
    ("npm", "1.0.0-alpha", "1.0.0"),
    ("npm", "1.0.0-alpha.1", "1.0.0-alpha.beta"),
    ("npm", "1.0.0-beta.2", "1.0.0-beta.11"),
    ("npm", "1.0.0-rc.1", "1.0.0"),
    ("SEMVER", "4.17.20", "4.17.21"),
]


@pytest.mark.parametrize(("ordering", "lower", "higher"), ORDER)
def test_version_ordering(ordering: str, lower: str, higher: str) -> None:
    lo, hi = parse_version(ordering, lower), parse_version(ordering, higher)
    assert lo is not None and hi is not None
    assert lo < hi and hi > lo and lo != hi


@pytest.mark.parametrize(
    ("ordering", "a", "b"), [("PyPI", "1.0", "1.0.0"), ("Debian", "0:1.0-1", "1.0-1")]
)
def test_version_equality(ordering: str, a: str, b: str) -> None:
    assert parse_version(ordering, a) == parse_version(ordering, b)


@pytest.mark.parametrize("ordering", ["Debian", "Alpine", "PyPI", "npm", "Go"])
def test_unparseable_versions_are_none(ordering: str) -> None:
    assert parse_version(ordering, "not a version!") is None


def adv(
    events: list[dict[str, str]] | None = None,
    ecosystem: str = "PyPI",
    name: str = "pkg",
    *,
    versions: list[str] | None = None,
    range_type: str = "ECOSYSTEM",
) -> dict[str, Any]:
    entry: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if events is not None:
        entry["ranges"] = [{"type": range_type, "events": events}]
        if range_type == "GIT":
            entry["ranges"][0]["repo"] = "https://example.invalid/repo"
    if versions is not None:
        entry["versions"] = versions
    return {"id": "TEST-1", "modified": "2026-01-01T00:00:00Z", "affected": [entry]}


TWO_WINDOWS = [{"introduced": "1.0"}, {"fixed": "1.5"}, {"introduced": "2.0"}, {"fixed": "2.5"}]
RANGES = [
    # (events, installed, expected)
    ([{"introduced": "0"}, {"fixed": "1.5"}], "1.0", (True, "1.5")),
    ([{"introduced": "0"}, {"fixed": "1.5"}], "1.5", (False, None)),
    ([{"introduced": "0"}, {"fixed": "1.5"}], "1.5rc1", (True, "1.5")),
    ([{"introduced": "0"}, {"fixed": "1.5"}], "2.0", (False, None)),
    ([{"introduced": "0"}], "99.0", (True, None)),
    (TWO_WINDOWS, "0.9", (False, None)),
    (TWO_WINDOWS, "1.0", (True, "1.5")),
    (TWO_WINDOWS, "1.7", (False, None)),
    (TWO_WINDOWS, "2.1", (True, "2.5")),
    (TWO_WINDOWS, "2.5", (False, None)),
    (list(reversed(TWO_WINDOWS)), "2.1", (True, "2.5")),  # events need not arrive sorted
    ([{"introduced": "1.0"}, {"last_affected": "1.4"}], "1.4", (True, None)),
    ([{"introduced": "1.0"}, {"last_affected": "1.4"}], "1.4.1", (False, None)),
    ([{"introduced": "1.0"}, {"last_affected": "1.4"}], "0.5", (False, None)),
    ([{"introduced": "0"}, {"limit": "2.0"}], "1.9", (True, None)),
    ([{"introduced": "0"}, {"limit": "2.0"}], "2.0", (False, None)),
    ([{"introduced": "0"}, {"limit": "*"}], "5.0", (True, None)),
    ([{"introduced": "0"}, {"fixed": "not a version!"}], "1.0", (False, None)),
]


@pytest.mark.parametrize(("events", "installed", "expected"), RANGES)
def test_range_semantics(
    events: list[dict[str, str]], installed: str, expected: tuple[bool, str | None]
) -> None:
    assert affected(adv(events), "PyPI", installed) == expected


def test_explicit_versions_list() -> None:
    advisory = adv(versions=["1.2", "1.3"])
    assert affected(advisory, "PyPI", "1.2") == (True, None)
    assert affected(advisory, "PyPI", "1.4") == (False, None)


def test_versions_list_compares_in_ecosystem_order_and_reports_the_fix() -> None:
    advisory = adv([{"introduced": "2.0"}, {"fixed": "2.1"}], versions=["1.2"])
    assert affected(advisory, "PyPI", "1.2.0") == (True, "2.1")


def test_git_ranges_are_ignored() -> None:
    assert affected(adv([{"introduced": "0"}], range_type="GIT"), "PyPI", "1.0") == (False, None)


def test_semver_ranges_for_npm() -> None:
    advisory = adv([{"introduced": "0"}, {"fixed": "1.0.0"}], "npm", range_type="SEMVER")
    assert affected(advisory, "npm", "1.0.0-rc.1") == (True, "1.0.0")
    assert affected(advisory, "npm", "1.0.0") == (False, None)


def test_debian_and_alpine_orderings_apply_to_their_ranges() -> None:
    deb = adv([{"introduced": "0"}, {"fixed": "1:1.0-1"}], "Debian:12", "foo")
    assert affected(deb, "Debian:12", "2.0-1") == (True, "1:1.0-1")  # epoch 0 < epoch 1
    assert affected(deb, "Debian:11", "2.0-1") == (False, None)  # another release
    apk = adv([{"introduced": "0"}, {"fixed": "1.2.3-r1"}], "Alpine", "foo")
    assert affected(apk, "Alpine:v3.19", "1.2.3_rc1-r5") == (True, "1.2.3-r1")
    assert affected(apk, "Alpine:v3.19", "1.2.3_p1-r0") == (False, None)
    window = adv([{"introduced": "1.2.3_rc1-r0"}, {"last_affected": "1.2.3-r0"}], "Alpine", "foo")
    assert affected(window, "Alpine:v3.19", "1.2.3_rc1-r5") == (True, None)
    assert affected(window, "Alpine:v3.19", "1.2.3-r1") == (False, None)


def test_ecosystem_and_name_must_match() -> None:
    advisory = adv([{"introduced": "0"}], "PyPI", "Foo_Bar")
    assert affected(advisory, "npm", "1.0") == (False, None)
    assert affected(advisory, "PyPI", "1.0", name="foo.bar") == (True, None)
    assert affected(advisory, "PyPI", "1.0", name="other") == (False, None)


def test_lowest_fix_above_the_installed_version_of_the_hitting_range() -> None:
    advisory = adv([{"introduced": "0"}, {"fixed": "1.5"}])
    advisory["affected"][0]["ranges"].append(
        {"type": "ECOSYSTEM", "events": [{"introduced": "1.2"}, {"fixed": "1.3"}]}
    )
    assert affected(advisory, "PyPI", "1.2.5") == (True, "1.3")
    assert affected(advisory, "PyPI", "1.4") == (True, "1.5")


@pytest.mark.parametrize(
    ("score", "label"),
    [
        (10.0, "critical"),
        (9.0, "critical"),
        (8.9, "high"),
        (7.0, "high"),
        (6.9, "medium"),
        (4.0, "medium"),
        (3.9, "low"),
        (0.1, "low"),
        (0.0, "unknown"),
    ],
)
def test_score_bands(score: float, label: str) -> None:
    assert score_severity(score) == label


@pytest.mark.parametrize(
    ("kind", "vector", "label"),
    [
        ("CVSS_V3", V3_CRITICAL, "critical"),
        ("CVSS_V3", V3_HIGH, "high"),
        ("CVSS_V3", V3_MEDIUM, "medium"),
        ("CVSS_V3", V30_LOW, "low"),
        ("CVSS_V3", V3_NONE, "unknown"),
        ("CVSS_V3", "CVSS:3.1/AV:X/garbage", "unknown"),
        ("CVSS_V4", V4_CRITICAL, "critical"),
        ("CVSS_V2", V2_TEN, "high"),
        ("Ubuntu", "medium", "medium"),
        ("UNKNOWN_TYPE", "whatever", "unknown"),
    ],
)
def test_cvss_vector_to_severity(kind: str, vector: str, label: str) -> None:
    assert cvss_severity(kind, vector) == label


@pytest.mark.parametrize(
    ("word", "label"),
    [
        ("CRITICAL", "critical"),
        ("High", "high"),
        ("important", "high"),
        ("MODERATE", "medium"),
        ("medium", "medium"),
        ("LOW", "low"),
        ("negligible", "low"),
        ("unimportant", "low"),
        ("not yet assigned", "unknown"),
        (None, "unknown"),
        (7, "unknown"),
    ],
)
def test_label_severity(word: Any, label: str) -> None:
    assert label_severity(word) == label


def test_severity_sources_in_order() -> None:
    record = adv([{"introduced": "0"}])
    entry = record["affected"][0]
    assert severity(record, entry) == "unknown"
    record["severity"] = [{"type": "CVSS_V3", "score": V3_MEDIUM}]
    assert severity(record, entry) == "medium"  # computed from the vector
    record["severity"].append({"type": "CVSS_V4", "score": V4_CRITICAL})
    assert severity(record, entry) == "medium"  # v3 before v4
    record["database_specific"] = {"severity": "MODERATE"}
    record["severity"] = [{"type": "CVSS_V3", "score": V3_CRITICAL}]
    assert severity(record, entry) == "medium"  # the database's word before a vector
    entry["ecosystem_specific"] = {"severity": "LOW"}
    assert severity(record, entry) == "low"  # the matched package's own data first
    entry["severity"] = [{"type": "CVSS_V3", "score": V3_HIGH}]
    assert severity(record, entry) == "high"
    assert severity(record) == "medium"
