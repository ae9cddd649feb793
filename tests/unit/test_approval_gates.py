"""The approvals and verified gates (pure), their policy JSON, and their stores on fakeredis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from service.domain.approvals import approver_matches, parse_approver, tally
from service.domain.durations import format_time
from service.domain.errors import InvalidRequest
from service.domain.gates import (
    PromotionContext,
    approval_tally,
    evaluate_promotion,
    evaluate_rollback,
)
from service.domain.policy_model import ApprovalGate, Gate, Policy, VerifiedGate
from service.domain.schemas.policy import dump_policy, load_policy
from service.store.approvals import ApprovalStore
from service.store.verifications import VerificationStore

pytestmark = pytest.mark.unit

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
NOW = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
REPO = "team-a/app"
APPROVALS = ApprovalGate(required=2, approvers=("role:admin", "token:alice", "glob:release-*"),
                         requester_may_approve=False, valid_for_seconds=86400)
VERIFIED = VerifiedGate(in_env="staging", checks=("acceptance", "smoke"))
POLICY = Policy(name="four-eyes", repositories=("team-a/*",),
                promotion={"develop": Gate(), "staging": Gate(),
                           "production": Gate(approvals=APPROVALS, verified=VERIFIED)})


def approval(n: int, approver: str, role: str = "reader", *, digest: str = D1,
             environment: str = "production", age: int = 60, valid_for: int = 86400,
             withdrawn: bool = False) -> dict:
    created = NOW - timedelta(seconds=age)
    return {"id": f"apr_{n:04d}", "repository": REPO, "environment": environment,
            "digest": digest, "approver": approver, "approver_role": role,
            "created_at": format_time(created),
            "expires_at": format_time(created + timedelta(seconds=valid_for)),
            "withdrawn_at": format_time(NOW) if withdrawn else None}


def check(name: str, result: str, at: str = "2026-11-28T15:00:00Z", url: str | None = None
          ) -> dict:
    return {"name": name, "result": result, "created_at": at, "url": url}


PASSING = {"acceptance": check("acceptance", "passed"), "smoke": check("smoke", "passed")}


def ctx(**overrides) -> PromotionContext:
    base = dict(repository=REPO, environment="production", digest=D1, source_kind="digest",
                source_value=D1, now=NOW, requester="bob", approvals=(),
                verifications=PASSING)
    return PromotionContext(**{**base, **overrides})


# -- who may approve ------------------------------------------------------------------------
@pytest.mark.parametrize("spec,name,role,expected", [
    ("role:admin", "anyone", "admin", True),
    ("role:admin", "anyone", "ci", False),
    ("role:ci", "anyone", "admin", False),  # a role entry names that role exactly
    ("token:alice", "alice", "reader", True),
    ("token:alice", "alice2", "reader", False),
    ("token:alice", "Alice", "reader", False),
    ("glob:release-*", "release-mgr", "reader", True),
    ("glob:release-*", "pre-release-mgr", "admin", False),
    ("glob:release-?", "release-1", "ci", True),
])
def test_approver_entries(spec: str, name: str, role: str, expected: bool):
    assert approver_matches(spec, name, role) is expected


@pytest.mark.parametrize("spec", ["admin", "role:", "role:owner", "user:alice", "token:",
                                  ":alice"])
def test_bad_approver_entries_are_refused(spec: str):
    with pytest.raises(ValueError):
        parse_approver(spec)


# -- counting ---------------------------------------------------------------------------------
def test_two_distinct_allowed_approvers_let_the_promotion_through():
    given = [approval(1, "alice"), approval(2, "release-mgr")]
    decision = evaluate_promotion(POLICY, ctx(approvals=given))
    assert decision.allowed, decision.violations
    counted = approval_tally(POLICY.gate("production"), ctx(approvals=given))
    assert counted is not None and sorted(counted.ids) == ["apr_0001", "apr_0002"]


def test_a_replay_by_the_same_approver_counts_once():
    given = [approval(1, "alice", age=120), approval(2, "alice", age=60)]
    decision = evaluate_promotion(POLICY, ctx(approvals=given))
    assert decision.rules == ["promotion.approvals"]
    assert decision.violations[0].message == (
        f"'production' needs 2 approval(s) of {D1} from distinct approvers; 1 valid (alice), "
        "1 missing. May approve: role:admin, token:alice, glob:release-*; not the requester "
        f"'bob'. Approve with `tagwarden approve --repository {REPO} --env production "
        f"--digest {D1}` (POST /api/v1/approvals); approvals expire after 1d")
    counted = tally(APPROVALS, given, environment="production", digest=D1, requester="bob",
                    now=NOW)
    assert counted.ids == ["apr_0002"] and counted.missing == 1  # the newest one is named


def test_the_requester_does_not_count_unless_allowed():
    given = [approval(1, "alice"), approval(2, "bob", "admin")]
    decision = evaluate_promotion(POLICY, ctx(approvals=given))
    assert decision.rules == ["promotion.approvals"]
    assert "1 valid (alice) (the requester's own approval does not count), 1 missing" in (
        decision.violations[0].message)
    allowed = Policy(name="p", repositories=("*",), promotion={"production": Gate(
        approvals=ApprovalGate(2, APPROVALS.approvers, requester_may_approve=True))})
    assert evaluate_promotion(allowed, ctx(approvals=given, verifications={})).allowed


@pytest.mark.parametrize("stale", [
    approval(2, "release-mgr", age=90000),  # expired: created 25h ago, valid for 24h
    approval(2, "release-mgr", age=10, valid_for=10),  # expires exactly now
    approval(2, "release-mgr", age=86400, valid_for=90000),  # the policy now says 24h
    approval(2, "release-mgr", withdrawn=True),
    approval(2, "release-mgr", digest=D2),  # another digest
    approval(2, "release-mgr", environment="staging"),  # another environment
    approval(2, "carol", "ci"),  # not (or no longer) an allowed approver
], ids=["expired", "expiring-now", "valid-for-shortened", "withdrawn", "other-digest",
        "other-env", "not-allowed"])
def test_approvals_that_do_not_count(stale: dict):
    decision = evaluate_promotion(POLICY, ctx(approvals=[approval(1, "alice"), stale]))
    assert decision.rules == ["promotion.approvals"]
    assert "1 valid (alice), 1 missing" in decision.violations[0].message


def test_no_approvals_says_all_are_missing_and_without_gate_nothing_is_asked():
    decision = evaluate_promotion(POLICY, ctx())
    assert decision.rules == ["promotion.approvals"]
    assert "; 0 valid, 2 missing. May approve: role:admin, token:alice, glob:release-*" in (
        decision.violations[0].message)
    assert evaluate_promotion(POLICY, ctx(environment="staging")).allowed
    assert approval_tally(POLICY.gate("staging"), ctx(environment="staging")) is None


# -- verification evidence ---------------------------------------------------------------------
def test_each_named_check_must_have_passed_last():
    given = [approval(1, "alice"), approval(2, "release-mgr")]
    failed = {**PASSING, "acceptance": check("acceptance", "failed", url="https://ci/1")}
    decision = evaluate_promotion(POLICY, ctx(approvals=given, verifications=failed))
    assert decision.rules == ["promotion.verified"]
    assert decision.violations[0].message == (
        f"'production' needs passing checks recorded in 'staging' for {D1}: acceptance: newest "
        "result failed (2026-11-28T15:00:00Z, https://ci/1). Run the checks against 'staging', "
        f"then record each with `tagwarden verify --repository {REPO} --env staging --digest "
        f"{D1} --name <check> --result passed` (POST /api/v1/verifications)")
    missing = evaluate_promotion(POLICY, ctx(approvals=given, verifications={
        "acceptance": check("acceptance", "passed")}))
    assert missing.rules == ["promotion.verified"]
    assert ": smoke: never recorded." in missing.violations[0].message


def test_both_gates_report_together_and_rollback_skips_them():
    decision = evaluate_promotion(POLICY, ctx(verifications={}))
    assert decision.rules == ["promotion.approvals", "promotion.verified"]
    assert evaluate_rollback(POLICY, ctx(verifications={})).allowed


# -- the policy JSON ---------------------------------------------------------------------------
def test_policy_json_round_trips_the_new_gates():
    raw = {"name": "four-eyes", "repositories": ["team-a/*"], "promotion": {
        "production": {"from": "staging",
                       "approvals": {"required": 2, "valid_for": "24h",
                                     "approvers": ["role:admin", "token:alice", "glob:release-*"]},
                       "verified": {"in": "staging", "checks": ["acceptance"]}}}}
    policy = load_policy(raw)
    assert policy.gate("production").approvals == ApprovalGate(
        2, ("role:admin", "token:alice", "glob:release-*"), False, 86400)
    assert policy.gate("production").verified == VerifiedGate("staging", ("acceptance",))
    dumped = dump_policy(policy)["promotion"]["production"]
    assert dumped["approvals"] == {"required": 2, "approvers": [
        "role:admin", "token:alice", "glob:release-*"], "requester_may_approve": False,
        "valid_for": "1d"}
    assert dumped["verified"] == {"in": "staging", "checks": ["acceptance"]}
    assert load_policy(dump_policy(policy)) == policy


@pytest.mark.parametrize("gate,field,message", [
    ({"approvals": {"required": 3, "approvers": ["token:a", "token:b"]}},
     "promotion.production.approvals.required",
     "3 approvals required but only 2 token(s) may approve"),
    ({"approvals": {"required": 0, "approvers": ["role:admin"]}},
     "promotion.production.approvals.required",
     "Must be greater than or equal to 1 and less than or equal to 20."),
    ({"approvals": {"required": 1, "approvers": ["role:owner"]}},
     "promotion.production.approvals.approvers.0",
     "approver 'role:owner': unknown role 'owner' (reader, ci, admin)"),
    ({"approvals": {"required": 1, "approvers": ["role:admin"], "valid_for": "0s"}},
     "promotion.production.approvals.valid_for", "must be between 1s and 366d"),
    ({"approvals": {"required": 1, "approvers": ["role:admin"], "extra": 1}},
     "promotion.production.approvals.extra", "Unknown field."),
    ({"verified": {"in": "qa", "checks": ["acceptance"]}},
     "promotion.production.verified.in", "unknown environment 'qa': not in environments"),
    ({"verified": {"in": "staging", "checks": []}},
     "promotion.production.verified.checks", "Length must be between 1 and 50."),
])
def test_bad_gates_are_refused_naming_the_field(gate: dict, field: str, message: str):
    with pytest.raises(InvalidRequest) as caught:
        load_policy({"name": "p", "repositories": ["*"], "promotion": {"production": gate}})
    assert caught.value.errors[field] == [message]


# -- the stores (fakeredis) ----------------------------------------------------------------------
@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_approval_store_counts_lists_and_withdraws(r: fakeredis.FakeRedis):
    store = ApprovalStore(r)
    first, second = approval(1, "alice"), approval(2, "release-mgr")
    other = {**approval(3, "alice", digest=D2), "repository": "team-b/app"}
    for item in (first, second, other):
        store.add(item, 86400)
    assert sorted(a["id"] for a in store.valid_for(REPO, "production", D1)) == [
        "apr_0001", "apr_0002"]
    items, cursor = store.list(None, None, None, 10, None)
    assert [a["id"] for a in items] == ["apr_0003", "apr_0002", "apr_0001"] and cursor is None
    items, _ = store.list(REPO, "production", D1, 1, None)
    assert [a["id"] for a in items] == ["apr_0002"]
    items, _ = store.list(None, None, None, 10, None, lambda repo: repo == "team-b/app")
    assert [a["id"] for a in items] == ["apr_0003"]
    done, changed = store.withdraw("apr_0001", "alice", "2026-11-28T16:00:00Z")
    assert changed and done is not None and done["withdrawn_by"] == "alice"
    assert store.withdraw("apr_0001", "admin", "2026-11-28T16:01:00Z") == (done, False)
    assert store.withdraw("apr_9999", "admin", "x") == (None, False)
    assert [a["id"] for a in store.valid_for(REPO, "production", D1)] == ["apr_0002"]
    assert store.get("apr_0001")["withdrawn_at"] == "2026-11-28T16:00:00Z"
    ttl = r.ttl(next(iter(r.scan_iter("tw:approvals:valid:*:" + D1))))
    assert 86400 < ttl <= 86400 + 3600
    # for retention: digests with an approval not yet expired (the latest expiry counts)
    expiry_ms = int((NOW - timedelta(seconds=60) + timedelta(days=1)).timestamp() * 1000)
    assert store.pending_digests(REPO, expiry_ms - 1) == {D1}
    assert store.pending_digests(REPO, expiry_ms) == set()
    assert store.pending_digests("team-b/app", 0) == {D2}


def test_verification_store_keeps_the_newest_result_per_check(r: fakeredis.FakeRedis):
    store = VerificationStore(r)
    base = {"repository": REPO, "digest": D1, "environment": "staging", "url": None}
    store.add({**base, "id": "vrf_1", "name": "acceptance", "result": "passed"})
    store.add({**base, "id": "vrf_2", "name": "acceptance", "result": "failed"})
    store.add({**base, "id": "vrf_3", "name": "smoke", "result": "passed"})
    store.add({**base, "id": "vrf_4", "name": "smoke", "result": "passed",
               "environment": "production"})
    latest = store.latest(REPO, D1, "staging")
    assert {name: v["id"] for name, v in latest.items()} == {"acceptance": "vrf_2",
                                                            "smoke": "vrf_3"}
    items, _ = store.list(REPO, D1, "staging", 10, None)
    assert [v["id"] for v in items] == ["vrf_3", "vrf_2", "vrf_1"]
    items, _ = store.list(None, None, "production", 10, None)
    assert [v["id"] for v in items] == ["vrf_4"]
