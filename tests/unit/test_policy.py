from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.domain.errors import InvalidRequest, PolicyDenied
from service.domain.policy import (
    DEFAULT_POLICY,
    Decision,
    FreezeWindow,
    Gate,
    IgnoreEntry,
    Policy,
    PromotionContext,
    PushRules,
    ScanGate,
    Violation,
    evaluate_delete,
    evaluate_promotion,
    evaluate_push,
    evaluate_tag_delete,
    format_duration,
    glob_specificity,
    match_policy,
    parse_duration,
)

pytestmark = pytest.mark.unit

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
NOW = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)

TEAM = Policy(
    name="team-a",
    repositories=("team-a/*",),
    environments=("develop", "staging", "production"),
    push=PushRules(
        allow=("semver", "git-sha", "latest", "regex:^pr-[0-9]+$"),
        deny=("regex:^tmp-",),
        immutable=("semver", "git-sha"),
    ),
    promotion={
        "develop": Gate(),
        "staging": Gate(from_env="develop", tags=("semver", "git-sha")),
        "production": Gate(
            from_env="staging",
            tags=("semver",),
            scan=ScanGate(
                required=True,
                max_severity="high",
                ignore=(
                    IgnoreEntry("CVE-2024-0001", NOW + timedelta(days=30), "not reachable"),
                    IgnoreEntry("CVE-2024-0002", NOW - timedelta(seconds=1), "expired"),
                    IgnoreEntry("GHSA-xxxx-yyyy-zzzz", None, "no expiry"),
                ),
            ),
            soak_seconds=1800,
            freeze=(
                FreezeWindow(
                    datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 27, tzinfo=UTC)
                ),
                FreezeWindow(
                    datetime(2026, 12, 27, tzinfo=UTC), datetime(2026, 12, 28, tzinfo=UTC)
                ),
            ),
        ),
    },
)


def rules(decision):
    return [v.rule for v in decision.violations]


# --- default policy and policy matching ---------------------------------------------------


def test_default_policy_is_the_documented_one():
    p = DEFAULT_POLICY
    assert (p.name, p.repositories) == ("default", ("*",))
    assert p.environments == ("develop", "staging", "production")
    assert p.push == PushRules(("semver", "git-sha", "latest", "other"), (), ("semver", "git-sha"))
    assert p.promotion == {
        "develop": Gate(),
        "staging": Gate(from_env="develop", tags=("semver", "git-sha")),
        "production": Gate(
            from_env="staging",
            tags=("semver", "git-sha"),
            scan=ScanGate(required=True, max_severity="high"),
        ),
    }
    assert (p.scan_on_push, p.on_drift) == (True, "restore")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", (0, 1)),
        ("team-a/*", (7, 1)),
        ("team-a/app", (10, 0)),
        ("team-?/app", (9, 1)),
        ("team-[ab]/*", (6, 2)),
        ("team-[!ab]/*", (6, 2)),
        ("team-[/x", (8, 0)),
    ],
)
def test_glob_specificity(pattern, expected):
    assert glob_specificity(pattern) == expected


def _named(name, *globs):
    return Policy(name=name, repositories=globs)


@pytest.mark.parametrize(
    ("repository", "policies", "expected"),
    [
        ("team-a/app", [], "default"),
        ("team-b/app", [_named("a", "team-a/*")], "default"),
        ("team-a/app", [_named("all", "*"), _named("a", "team-a/*")], "a"),
        ("team-a/svc/api", [_named("all", "*"), _named("a", "team-a/*")], "a"),  # * crosses /
        ("team-a/app", [_named("a", "team-a/*"), _named("app", "team-a/app")], "app"),
        ("team-a/app", [_named("q", "team-?/app"), _named("s", "team-a/*")], "q"),
        ("team-a/app", [_named("q", "team-a/??p"), _named("star", "team-a/*p")], "star"),
        ("team-a/app", [_named("z", "team-a/*"), _named("b", "team-a/*")], "b"),
        ("team-a/app", [_named("multi", "x/*", "team-a/app"), _named("a", "team-a/*")], "multi"),
        ("Team-a/app", [_named("a", "team-a/*")], "default"),
    ],
)
def test_match_policy_most_specific_wins(repository, policies, expected):
    assert match_policy(repository, policies).name == expected


def test_match_policy_falls_back_to_default_object():
    assert match_policy("x/y", []) is DEFAULT_POLICY


# --- push ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "current", "expected"),
    [
        ("v1.2.3", None, []),
        ("v1.2.3", D1, []),  # re-push of the same digest
        ("v1.2.3", D2, ["push.immutable"]),
        ("sha-abcdef0", D2, ["push.immutable"]),
        ("latest", D2, []),  # latest is mutable
        ("pr-42", D2, []),
        ("production", None, ["push.reserved"]),
        ("staging", D1, ["push.reserved"]),
        ("tmp-1.2.3", None, ["push.denied", "push.not_allowed"]),
        ("feature-x", None, ["push.not_allowed"]),
        ("pr-42x", None, ["push.not_allowed"]),
    ],
)
def test_evaluate_push(tag, current, expected):
    decision = evaluate_push(TEAM, "team-a/app", tag, D1, current)
    assert rules(decision) == expected
    assert decision.allowed is (not expected)
    assert decision.policy == "team-a"
    assert all(v.policy == "team-a" for v in decision.violations)


def test_push_messages_say_what_to_do():
    reserved = evaluate_push(TEAM, "team-a/app", "production", D1, None).violations[0]
    assert reserved.message.startswith(
        "tag 'production' is owned by the promotion API: POST /api/v1/promotions"
    )
    not_allowed = evaluate_push(TEAM, "team-a/app", "feature-x", D1, None).violations[0]
    assert "class other" in not_allowed.message
    assert "semver, git-sha, latest, regex:^pr-[0-9]+$" in not_allowed.message
    denied = evaluate_push(TEAM, "team-a/app", "tmp-x", D1, None).violations[0]
    assert "regex:^tmp-" in denied.message
    immutable = evaluate_push(TEAM, "team-a/app", "1.0.0", D1, D2).violations[0]
    assert D2 in immutable.message


def test_push_under_default_policy_allows_other_tags():
    assert evaluate_push(DEFAULT_POLICY, "x/y", "feature-x", D1, None).allowed is True
    assert rules(evaluate_push(DEFAULT_POLICY, "x/y", "1.0.0", D1, D2)) == ["push.immutable"]


@pytest.mark.parametrize(
    ("repository", "tag", "field"),
    [
        ("team-a/app", "bad tag", "tag"),
        ("team-a/app", "a" * 129, "tag"),
        ("Team/App", "v1", "repository"),
    ],
)
def test_push_of_malformed_names_raises_before_rules(repository, tag, field):
    with pytest.raises(InvalidRequest) as info:
        evaluate_push(TEAM, repository, tag, D1, None)
    assert list(info.value.errors) == [field]


# --- delete -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "pointers", "expected", "named"),
    [
        (["v1"], {}, [], None),
        (["v1"], {"production": D2, "staging": None}, [], None),
        (["v1"], {"production": D1, "develop": D1}, ["delete.in_use"], "'develop', 'production'"),
        (["v1", "staging"], {}, ["delete.in_use"], "'staging'"),
    ],
)
def test_evaluate_delete(tags, pointers, expected, named):
    decision = evaluate_delete(TEAM, "team-a/app", D1, tags, pointers)
    assert rules(decision) == expected
    if named:
        assert f"environment {named} of team-a/app" in decision.violations[0].message


@pytest.mark.parametrize(
    ("tag", "current", "expected"),
    [
        ("production", D1, ["delete.in_use"]),
        ("v1.2.3", D1, ["push.immutable"]),
        ("v1.2.3", None, []),
        ("latest", D1, []),
        ("pr-1", D1, []),
    ],
)
def test_evaluate_tag_delete(tag, current, expected):
    assert rules(evaluate_tag_delete(TEAM, "team-a/app", tag, current)) == expected


def test_tag_delete_rejects_malformed_tag():
    with pytest.raises(InvalidRequest):
        evaluate_tag_delete(TEAM, "team-a/app", "-x", D1)


# --- decisions ----------------------------------------------------------------------------


def test_decision_to_dict_shape():
    decision = Decision.of(TEAM, [Violation("push.denied", "no", "team-a")])
    assert decision.to_dict() == {
        "allowed": False,
        "policy": "team-a",
        "violations": [{"rule": "push.denied", "message": "no", "policy": "team-a"}],
    }
    assert Decision.of(TEAM, []).to_dict() == {
        "allowed": True,
        "policy": "team-a",
        "violations": [],
    }


def test_raise_if_denied():
    Decision.of(TEAM, []).raise_if_denied()
    decision = Decision.of(TEAM, [Violation("push.denied", "no", "team-a")])
    with pytest.raises(PolicyDenied) as info:
        decision.raise_if_denied()
    assert info.value.decision is decision
    assert "push.denied" in info.value.message


# --- promotion ----------------------------------------------------------------------------


def ctx(**overrides):
    base = dict(
        repository="team-a/app",
        environment="production",
        digest=D1,
        source_kind="environment",
        source_value="staging",
        digest_tags=["v1.2.3", "staging"],
        history_first_seen={
            "develop": NOW - timedelta(days=2),
            "staging": NOW - timedelta(hours=1),
        },
        scan={"findings": []},
        now=NOW,
    )
    base.update(overrides)
    return PromotionContext(**base)


def finding(id_, severity, aliases=(), package="openssl"):
    return {"id": id_, "aliases": list(aliases), "severity": severity, "package": package}


def test_promotion_allowed_when_every_gate_passes():
    decision = evaluate_promotion(TEAM, ctx())
    assert decision.to_dict() == {"allowed": True, "policy": "team-a", "violations": []}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"environment": "qa"}, ["promotion.unknown_environment"]),
        ({"history_first_seen": {"develop": NOW}}, ["promotion.from"]),
        ({"environment": "develop", "history_first_seen": {}}, []),
        ({"environment": "staging", "history_first_seen": {"develop": NOW}}, []),
        (
            {"environment": "staging", "history_first_seen": {}, "digest_tags": ["latest"]},
            ["promotion.from", "promotion.tags"],
        ),
        ({"digest_tags": ["latest", "pr-1"]}, ["promotion.tags"]),
        ({"digest_tags": ["sha-abcdef0"]}, ["promotion.tags"]),  # production wants semver
        ({"environment": "staging", "digest_tags": ["sha-abcdef0"]}, []),
        ({"source_kind": "tag", "source_value": "latest"}, ["promotion.latest"]),
        ({"source_kind": "tag", "source_value": "v1.2.3"}, []),
        ({"source_kind": "digest", "source_value": "latest"}, []),
        (
            {
                "environment": "staging",
                "source_kind": "tag",
                "source_value": "latest",
                "digest_tags": ["latest", "v1.2.3"],
            },
            [],
        ),
        ({"scan": None}, ["promotion.scan_required"]),
        ({"scan": {"findings": [finding("CVE-1", "critical")]}}, ["promotion.severity"]),
        ({"scan": {"findings": [finding("CVE-1", "high"), finding("CVE-2", "medium")]}}, []),
        ({"scan": {"findings": [finding("CVE-1", "CRITICAL")]}}, ["promotion.severity"]),
        ({"scan": {"findings": [finding("CVE-1", None)]}}, []),
        ({"scan": {"findings": [finding("CVE-2024-0001", "critical")]}}, []),  # ignored
        ({"scan": {"findings": [finding("CVE-2024-0002", "critical")]}}, ["promotion.severity"]),
        ({"scan": {"findings": [finding("OSV-1", "critical", ["GHSA-xxxx-yyyy-zzzz"])]}}, []),
        ({"history_first_seen": {"staging": NOW - timedelta(minutes=10)}}, ["promotion.soak"]),
        ({"history_first_seen": {"staging": NOW - timedelta(minutes=30)}}, []),
        (
            {"now": datetime(2026, 12, 25, tzinfo=UTC), "history_first_seen": {"staging": NOW}},
            ["promotion.freeze"],
        ),
        ({"now": datetime(2026, 12, 28, tzinfo=UTC), "history_first_seen": {"staging": NOW}}, []),
    ],
)
def test_evaluate_promotion_rules(overrides, expected):
    decision = evaluate_promotion(TEAM, ctx(**overrides))
    assert rules(decision) == expected
    assert decision.allowed is (not expected)


def test_promotion_collects_every_violation():
    decision = evaluate_promotion(
        TEAM,
        ctx(
            source_kind="tag",
            source_value="latest",
            digest_tags=["latest"],
            history_first_seen={},
            scan=None,
            now=datetime(2026, 12, 24, 12, tzinfo=UTC),
        ),
    )
    assert rules(decision) == [
        "promotion.from",
        "promotion.tags",
        "promotion.latest",
        "promotion.scan_required",
        "promotion.freeze",
    ]


def test_unknown_environment_returns_alone():
    decision = evaluate_promotion(TEAM, ctx(environment="qa", scan=None, history_first_seen={}))
    assert rules(decision) == ["promotion.unknown_environment"]
    assert "develop, staging, production" in decision.violations[0].message


def test_ignore_expires_exactly_at_until():
    gate = TEAM.promotion["production"].scan
    assert gate is not None
    until = gate.ignore[0].until
    scan = {"findings": [finding("CVE-2024-0001", "critical")]}
    assert evaluate_promotion(TEAM, ctx(scan=scan, now=until - timedelta(seconds=1))).allowed
    late = ctx(scan=scan, now=until, history_first_seen={"staging": until - timedelta(days=1)})
    assert rules(evaluate_promotion(TEAM, late)) == ["promotion.severity"]


def test_severity_message_lists_worst_five():
    findings = [finding(f"CVE-9-{i}", "critical") for i in range(6)]
    findings += [finding("CVE-0-high", "high"), finding("CVE-0-low", "low")]
    findings.append(finding("CVE-8-0", "critical", package="zlib"))
    message = evaluate_promotion(TEAM, ctx(scan={"findings": findings})).violations[0].message
    assert message.startswith("7 finding(s) above the allowed 'high': CVE-8-0 (critical in zlib)")
    assert "CVE-9-3 (critical in openssl); " not in message
    assert "CVE-9-3 (critical in openssl) and 2 more" in message
    assert "CVE-0" not in message


def test_severity_with_max_unknown_denies_low():
    strict = replace(
        TEAM,
        promotion={"production": Gate(scan=ScanGate(required=False, max_severity="unknown"))},
    )
    assert rules(evaluate_promotion(strict, ctx(scan={"findings": [finding("A", "low")]}))) == [
        "promotion.severity"
    ]
    assert evaluate_promotion(strict, ctx(scan={"findings": [finding("A", "unknown")]})).allowed
    assert evaluate_promotion(strict, ctx(scan=None)).allowed  # not required


def test_soak_message_says_how_long_remains():
    decision = evaluate_promotion(
        TEAM, ctx(history_first_seen={"staging": NOW - timedelta(minutes=10)})
    )
    message = decision.violations[0].message
    assert "needs 30m in 'staging'" in message
    assert "20m remain" in message
    assert "retry after 2026-11-28T16:20:00Z" in message


def test_freeze_message_gives_end_of_touching_windows():
    decision = evaluate_promotion(
        TEAM, ctx(now=datetime(2026, 12, 25, tzinfo=UTC), history_first_seen={"staging": NOW})
    )
    assert decision.violations[0].message == (
        "'production' is frozen until 2026-12-28T00:00:00Z; retry after that"
    )


def test_default_policy_promotion_to_production_needs_scan_and_staging():
    decision = evaluate_promotion(DEFAULT_POLICY, ctx(history_first_seen={}, scan=None))
    assert rules(decision) == ["promotion.from", "promotion.scan_required"]
    assert decision.policy == "default"


# --- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("0s", 0),
        ("1d2h3m4s", 93784),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "30", "m", "1.5h", "30m1h", "1 h", "-1h", "1w", " 1h", None, 30]
)
def test_parse_duration_rejects(text):
    with pytest.raises(InvalidRequest) as info:
        parse_duration(text)
    assert "invalid duration" in info.value.message


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (90, "1m30s"), (5400, "1h30m"), (86400, "1d")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_rollback_skips_soak_and_scan_but_keeps_the_other_gates():
    from service.domain.gates import evaluate_rollback

    rushed = ctx(scan=None, history_first_seen={"develop": NOW, "staging": NOW})
    assert rules(evaluate_promotion(TEAM, rushed)) == ["promotion.scan_required",
                                                      "promotion.soak"]
    assert rules(evaluate_rollback(TEAM, rushed)) == []
    assert rules(evaluate_rollback(TEAM, ctx(history_first_seen={}))) == ["promotion.from"]
    frozen = ctx(now=datetime(2026, 12, 25, tzinfo=UTC), scan=None)
    assert rules(evaluate_rollback(TEAM, frozen)) == ["promotion.freeze"]


@pytest.mark.parametrize(
    ("tag", "immutable"),
    [("v1.2.3", True), ("git-sha-abcdef1", True), ("latest", False), ("pr-7", False),
     ("production", False)],
)
def test_is_immutable(tag, immutable):
    from service.domain.policy import is_immutable

    assert is_immutable(TEAM, tag) is immutable


@pytest.mark.parametrize(("newest", "says"), [
    (None, " and it was never scanned; run tagwarden scan --repository team-a/app --digest "
           f"{D1} --wait"),
    ({"id": "scn_1", "status": "running"}, "; its newest scan scn_1 is running: retry when it "
                                           "has succeeded"),
    ({"id": "scn_1", "status": "queued"}, "; its newest scan scn_1 is queued: retry"),
    ({"id": "scn_2", "status": "failed", "finished_at": "2026-11-28T15:00:00Z",
      "error": "no vulnerability database loaded: set TAGWARDEN_VULNDB"},
     "; its newest scan scn_2 failed at 2026-11-28T15:00:00Z: no vulnerability database "
     "loaded: set TAGWARDEN_VULNDB; load one first (tagwarden vulndb import PATH"),
    ({"id": "scn_3", "status": "failed", "finished_at": "2026-11-28T15:00:00Z",
      "error": f"{D1} is no longer in team-a/app"},
     f"; its newest scan scn_3 failed at 2026-11-28T15:00:00Z: {D1} is no longer in "
     "team-a/app; fix that, then run tagwarden scan"),
])
def test_scan_required_message_names_the_newest_scan(newest, says):
    decision = evaluate_promotion(TEAM, ctx(scan=None, newest_scan=newest))
    [violation] = [v for v in decision.violations if v.rule == "promotion.scan_required"]
    assert violation.message.startswith(
        f"'production' requires a succeeded scan of {D1}{says}"), violation.message
