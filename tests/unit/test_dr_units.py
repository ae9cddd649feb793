"""Pure parts of issue 21: the hotfix decision, the restore stream's checks, timeline cursors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from service.core.backup import _Validator
from service.core.timeline import decode_cursor, encode_cursor
from service.domain.errors import InvalidRequest
from service.domain.gates import PromotionContext, evaluate_hotfix
from service.domain.schemas.policy import load_policy

NOW = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
POLICY = load_policy({
    "name": "hf", "repositories": ["hf/*"],
    "promotion": {"staging": {}, "production": {
        "from": "staging", "soak": "1h", "tags": ["semver"],
        "freeze": [{"start": "2026-11-30T00:00:00Z", "end": "2026-12-02T00:00:00Z"}],
        "scan": {"required": True, "max_severity": "high"},
        "hotfix": {"bypass": ["from", "soak", "freeze"],
                   "approvals": {"required": 2, "approvers": ["role:admin"]}}}},
    "environments": ["staging", "production"]})
CLEAN_SCAN = {"findings": []}
CRITICAL_SCAN = {"findings": [{"id": "CVE-1", "severity": "critical", "package": "x"}]}


def _approval(name: str, hotfix: bool = True) -> dict:
    return {"id": f"apr_{name}", "approver": name, "approver_role": "admin", "digest": DIGEST,
            "environment": "production", "created_at": "2026-11-30T22:00:00Z",
            "expires_at": "2026-12-01T22:00:00Z", "hotfix": hotfix}


def _ctx(**overrides: object) -> PromotionContext:
    values: dict = dict(repository="hf/app", environment="production", digest=DIGEST,
                        source_kind="digest", source_value=DIGEST, digest_tags=("v1.0.0",),
                        scan=CLEAN_SCAN, now=NOW, requester="pipeline",
                        hotfix_approvals=(_approval("alice"), _approval("bob")))
    values.update(overrides)
    return PromotionContext(**values)


@pytest.mark.parametrize(("overrides", "rules", "bypassed"), [
    ({}, [], ["promotion.from", "promotion.freeze"]),
    ({"hotfix_approvals": (_approval("alice"),)}, ["promotion.hotfix_approvals"],
     ["promotion.from", "promotion.freeze"]),
    ({"hotfix_approvals": (_approval("alice"), _approval("alice"))},
     ["promotion.hotfix_approvals"], ["promotion.from", "promotion.freeze"]),
    ({"hotfix_approvals": (_approval("alice"), _approval("pipeline"))},
     ["promotion.hotfix_approvals"], ["promotion.from", "promotion.freeze"]),
    ({"scan": CRITICAL_SCAN}, ["promotion.severity"], ["promotion.from", "promotion.freeze"]),
    ({"scan": None}, ["promotion.scan_required"], ["promotion.from", "promotion.freeze"]),
    ({"source_kind": "tag", "source_value": "latest"}, ["promotion.latest"],
     ["promotion.from", "promotion.freeze"]),
    ({"digest_tags": ("sha-abcdef1",)}, ["promotion.tags"],
     ["promotion.from", "promotion.freeze"]),  # `tags` is not in this policy's bypass
    ({"history_first_seen": {"staging": NOW - timedelta(minutes=5)}}, [],
     ["promotion.soak", "promotion.freeze"]),
])
def test_a_hotfix_sets_aside_exactly_its_bypass_list(overrides, rules, bypassed):
    found = evaluate_hotfix(POLICY, _ctx(**overrides))
    assert found.decision.rules == rules
    assert [v.rule for v in found.bypassed] == bypassed
    assert found.decision.allowed is (rules == [])


def _stream(*lines: dict) -> list[bytes]:
    return [json.dumps(line).encode() for line in lines]


HEADER = {"kind": "header", "version": 1, "created_at": "2026-11-30T22:00:00Z", "cut": {}}
RECORD = {"id": "prm_1", "kind": "promotion", "repository": "hf/app", "environment": "staging",
          "digest": DIGEST, "previous_digest": None, "source": {"digest": DIGEST}, "tags": [],
          "actor": "ci", "reason": None, "created_at": "2026-11-30T21:00:00Z", "policy": "hf"}
POINTER = {"kind": "pointer", "repository": "hf/app", "environment": "staging", "pointer": {
    "digest": DIGEST, "promotion_id": "prm_1", "promoted_at": "2026-11-30T21:00:00Z",
    "tags": []}}
FOOTER = {"kind": "footer", "counts": {"promotion": 1, "pointer": 1}}


def _check(lines: list[bytes]) -> None:
    check = _Validator()
    for number, raw in enumerate(lines, 1):
        check.line(number, raw)
    check.finish()


def test_a_consistent_stream_passes():
    _check(_stream(HEADER, {"kind": "promotion", "id": "1-0", "record": RECORD}, POINTER,
                   FOOTER))


@pytest.mark.parametrize(("lines", "where"), [
    (_stream({"kind": "promotion", "id": "1-0", "record": RECORD}), "line 1"),
    (_stream(HEADER, {"kind": "promotion", "id": "1-0", "record": RECORD}, POINTER), "stream"),
    (_stream(HEADER, {"kind": "promotion", "id": "1-0", "record": RECORD}, FOOTER), "stream"),
    (_stream(HEADER, POINTER, {"kind": "promotion", "id": "1-0", "record": RECORD}, FOOTER),
     "line 2"),
    (_stream(HEADER, {"kind": "promotion", "id": "2-0", "record": RECORD},
             {"kind": "promotion", "id": "1-0", "record": RECORD}, POINTER, FOOTER), "line 3"),
    (_stream(HEADER, {"kind": "promotion", "id": "1-0", "record": {**RECORD, "kind": "x"}},
             POINTER, FOOTER), "line 2"),
    (_stream({**HEADER, "version": 2}), "line 1"),
    (_stream(HEADER, {"kind": "token", "token": {"id": "t", "name": "t", "role": "root",
                                                 "hash": "0" * 64,
                                                 "created_at": "2026-11-30T21:00:00Z"}}),
     "line 2"),
])
def test_a_broken_stream_names_where(lines, where):
    with pytest.raises(InvalidRequest) as caught:
        _check(lines)
    assert where in caught.value.message, caught.value.message


def test_timeline_cursors_round_trip_and_refuse_forgeries():
    positions = {"promotions": "1700000000000-0", "scans": "1700000000001-3"}
    assert decode_cursor(encode_cursor(positions)) == positions
    for forged in ("", "bm90IG91cnM", encode_cursor({"events": "1-0"})[:-2] + "!!",
                   "LCwsLCw5OTk5OTk5OTk5OTk5OTk5OTk5OTktMA"):
        with pytest.raises(InvalidRequest):
            decode_cursor(forged)


def test_scheduled_backups_rotate(tmp_path, monkeypatch):
    import fakeredis

    from service.core import backup
    from service.store import key

    client = fakeredis.FakeRedis(decode_responses=True)
    client.hset(key("policies"), "p", json.dumps({"name": "p", "repositories": ["*"]}))

    class Svc:
        redis = client

    names = iter(f"2026113{i}T000000000000Z" for i in range(5))
    monkeypatch.setattr(backup, "datetime", type("D", (), {
        "now": staticmethod(lambda tz: type("T", (), {"strftime": lambda self, f: next(names)})()),
        "fromtimestamp": staticmethod(datetime.fromtimestamp)}))
    (tmp_path / "tagwarden-backup-old.ndjson.partial").write_text("cut short")
    for _ in range(4):
        done = backup.scheduled(Svc(), str(tmp_path), keep=2)  # type: ignore[arg-type]
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["tagwarden-backup-20261132T000000000000Z.ndjson",
                    "tagwarden-backup-20261133T000000000000Z.ndjson"]
    assert done["removed"] == ["tagwarden-backup-20261131T000000000000Z.ndjson"]
    lines = (tmp_path / kept[-1]).read_text().splitlines()
    assert json.loads(lines[1])["kind"] == "policy"
    assert json.loads(lines[-1]) == {"kind": "footer", "counts": {"policy": 1}}
