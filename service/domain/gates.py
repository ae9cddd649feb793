"""Promotion gates: stage order, tag classes, `latest`, scan verdict, soak, freeze, attached
artifacts (referrers), approvals and verification evidence."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from service.domain.approvals import (
    Tally,
    approvals_message,
    tally,
    verification_gaps,
    verified_message,
)
from service.domain.durations import format_duration, format_time
from service.domain.policy_model import (
    HOTFIX_BYPASSABLE,
    SEVERITIES,
    ApprovalGate,
    Decision,
    FreezeWindow,
    Gate,
    IgnoreEntry,
    Policy,
    ReferrerRequirement,
    ScanGate,
    VerifiedGate,
    Violation,
)
from service.domain.tags import LATEST, matches_any

# critical=5 ... unknown=1: higher is worse.
SEVERITY_RANK = {severity: len(SEVERITIES) - i for i, severity in enumerate(SEVERITIES)}
MAX_LISTED = 5

SourceKind = Literal["tag", "digest", "environment"]


@dataclass(frozen=True, kw_only=True)
class PromotionContext:
    """Everything the gates look at; times are timezone-aware."""

    repository: str
    environment: str
    digest: str
    source_kind: SourceKind
    source_value: str
    digest_tags: Sequence[str] = ()
    history_first_seen: Mapping[str, datetime] = field(default_factory=dict)
    scan: Mapping[str, Any] | None = None
    # the newest scan of the digest whatever its state (what the scan gate's message names)
    newest_scan: Mapping[str, Any] | None = None
    referrer_types: frozenset[str] = frozenset()  # artifact types attached to the digest
    now: datetime
    # the approvals and verifications gates (service/domain/approvals.py)
    requester: str | None = None
    approvals: Sequence[Mapping[str, Any]] = ()
    verifications: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # a hotfix promotion: the hotfix approvals of the digest (a set of their own)
    hotfix_approvals: Sequence[Mapping[str, Any]] = ()


def evaluate_promotion(policy: Policy, ctx: PromotionContext) -> Decision:
    """Decide a promotion; every violated gate is reported, an unknown target alone."""
    if ctx.environment not in policy.environments:
        message = (
            f"environment '{ctx.environment}' is not one of the environments of policy "
            f"'{policy.name}': {', '.join(policy.environments)}"
        )
        return Decision.of(
            policy, [Violation("promotion.unknown_environment", message, policy.name)]
        )
    gate = policy.gate(ctx.environment)
    found = [
        *_check_from(gate, ctx),
        *_check_tags(gate, ctx, policy.environments),
        *_check_latest(ctx, policy.environments),
        *_check_scan(gate.scan, ctx),
        *_check_soak(gate, ctx),
        *_check_freeze(gate.freeze, ctx),
        *_check_referrers(gate.referrers, ctx),
        *_check_approvals(gate.approvals, ctx),
        *_check_verified(gate.verified, ctx),
    ]
    return Decision.of(policy, [Violation(rule, message, policy.name) for rule, message in found])


_Found = Iterable[tuple[str, str]]


def evaluate_rollback(policy: Policy, ctx: PromotionContext) -> Decision:
    """Decide a rollback: the promotion gates without soak, scan, approvals and verifications
    (the emergency exit goes back to a digest that already ran there)."""
    gate = policy.gate(ctx.environment)
    relaxed = replace(gate, scan=None, soak_seconds=0, approvals=None, verified=None)
    return evaluate_promotion(replace(policy, promotion={**policy.promotion,
                                                         ctx.environment: relaxed}), ctx)


def _check_from(gate: Gate, ctx: PromotionContext) -> _Found:
    if gate.from_env and gate.from_env not in ctx.history_first_seen:
        yield (
            "promotion.from",
            f"digest {ctx.digest} was never promoted to '{gate.from_env}'; "
            f"'{ctx.environment}' only accepts digests that went through '{gate.from_env}' first",
        )


def _check_tags(gate: Gate, ctx: PromotionContext, environments: Sequence[str]) -> _Found:
    if not gate.tags or any(matches_any(t, gate.tags, environments) for t in ctx.digest_tags):
        return
    carried = ", ".join(sorted(ctx.digest_tags)) or "none"
    yield (
        "promotion.tags",
        f"'{ctx.environment}' needs a digest carrying a tag of {', '.join(gate.tags)}; "
        f"{ctx.digest} carries: {carried}. Push such a tag for this digest first",
    )


def _check_latest(ctx: PromotionContext, environments: Sequence[str]) -> _Found:
    from_latest = ctx.source_kind == "tag" and ctx.source_value == LATEST
    if from_latest and ctx.environment == environments[-1]:
        yield (
            "promotion.latest",
            f"the tag 'latest' can never be promoted to '{ctx.environment}'; promote a "
            "versioned tag, the digest, or the previous environment instead",
        )


def _check_scan(scan_gate: ScanGate | None, ctx: PromotionContext) -> _Found:
    if scan_gate is None:
        return
    if ctx.scan is None:
        if scan_gate.required:
            yield "promotion.scan_required", _scan_required_message(ctx)
        return
    if scan_gate.max_severity is None:
        return
    limit = SEVERITY_RANK[scan_gate.max_severity]
    ignored = _active_ignores(scan_gate.ignore, ctx.now)
    worse = [
        f
        for f in ctx.scan.get("findings") or ()
        if SEVERITY_RANK[normalize_severity(f.get("severity"))] > limit
        and not _finding_ids(f) & ignored
    ]
    if worse:
        yield ("promotion.severity", _severity_message(worse, scan_gate.max_severity))


NO_VULNDB = "no vulnerability database loaded"


def _scan_required_message(ctx: PromotionContext) -> str:
    """What the newest scan of the digest says and what will actually help."""
    need = f"'{ctx.environment}' requires a succeeded scan of {ctx.digest}"
    scan_cmd = (f"tagwarden scan --repository {ctx.repository} --digest {ctx.digest} --wait "
                f'(or POST /api/v1/scans {{"repository": "{ctx.repository}", '
                f'"reference": "{ctx.digest}"}})')
    newest = ctx.newest_scan
    if newest is None:
        return f"{need} and it was never scanned; run {scan_cmd}, then retry"
    state, scan_id = newest.get("status"), newest.get("id")
    if state in ("queued", "running"):
        return (f"{need}; its newest scan {scan_id} is {state}: retry when it has succeeded "
                f"(tagwarden scan --repository {ctx.repository} --digest {ctx.digest} --wait "
                "waits for it)")
    error = str(newest.get("error") or "no error recorded")
    finished = newest.get("finished_at") or "?"
    if NO_VULNDB in error:
        help_ = ("load one first (tagwarden vulndb import PATH, an admin's call, or "
                 f"TAGWARDEN_VULNDB for the workers; every deployed digest is rescanned), then "
                 f"run {scan_cmd} and retry")
    else:
        help_ = f"fix that, then run {scan_cmd} and retry"
    return f"{need}; its newest scan {scan_id} {state} at {finished}: {error}; {help_}"


def normalize_severity(value: object) -> str:
    """A finding's severity as one of SEVERITIES (`moderate` is medium, unknown otherwise)."""
    text = str(value or "").strip().lower()
    text = "medium" if text == "moderate" else text
    return text if text in SEVERITY_RANK else "unknown"


def _active_ignores(entries: Iterable[IgnoreEntry], now: datetime) -> set[str]:
    return {e.id.upper() for e in entries if e.until is None or e.until > now}


def _finding_ids(finding: Mapping[str, Any]) -> set[str]:
    ids = [finding.get("id"), *(finding.get("aliases") or ())]
    return {str(i).upper() for i in ids if i}


def _severity_message(worse: list[Mapping[str, Any]], max_severity: str) -> str:
    worse = sorted(
        worse,
        key=lambda f: (-SEVERITY_RANK[normalize_severity(f.get("severity"))], str(f.get("id"))),
    )
    listed: list[str] = []
    for finding in worse:
        severity = normalize_severity(finding.get("severity"))
        package = f" in {finding['package']}" if finding.get("package") else ""
        text = f"{finding.get('id')} ({severity}{package})"
        if text not in listed:
            listed.append(text)
    more = f" and {len(listed) - MAX_LISTED} more" if len(listed) > MAX_LISTED else ""
    return (
        f"{len(worse)} finding(s) above the allowed '{max_severity}': "
        f"{', '.join(listed[:MAX_LISTED])}{more}; fix them or add a policy ignore entry "
        "with an expiry"
    )


def _check_soak(gate: Gate, ctx: PromotionContext) -> _Found:
    first = ctx.history_first_seen.get(gate.from_env) if gate.from_env else None
    if not gate.soak_seconds or first is None:
        return
    elapsed = (ctx.now - first).total_seconds()
    if elapsed >= gate.soak_seconds:
        return
    remaining = math.ceil(gate.soak_seconds - elapsed)
    yield (
        "promotion.soak",
        f"'{ctx.environment}' needs {format_duration(gate.soak_seconds)} in "
        f"'{gate.from_env}' (since {format_time(first)}); {format_duration(remaining)} "
        f"remain, retry after {format_time(first + timedelta(seconds=gate.soak_seconds))}",
    )


def _check_freeze(windows: Sequence[FreezeWindow], ctx: PromotionContext) -> _Found:
    active = [w for w in windows if w.start <= ctx.now < w.end]
    if not active:
        return
    # Windows that overlap or touch extend the freeze: report when it really ends.
    end = max(w.end for w in active)
    extended = True
    while extended:
        extended = False
        for window in windows:
            if window.start <= end < window.end:
                end, extended = window.end, True
    yield (
        "promotion.freeze",
        f"'{ctx.environment}' is frozen until {format_time(end)}; retry after that",
    )


def _check_referrers(required: Sequence[ReferrerRequirement], ctx: PromotionContext) -> _Found:
    missing = [r.artifact_type for r in required if r.artifact_type not in ctx.referrer_types]
    if not missing:
        return
    attached = ", ".join(sorted(ctx.referrer_types)) or "none"
    yield (
        "promotion.referrers",
        f"'{ctx.environment}' needs an artifact of type {', '.join(missing)} attached to "
        f"{ctx.digest} (a manifest whose subject is the digest); attached: {attached}. Push "
        "it with its subject set, e.g. `oras attach`, then retry",
    )


def approval_tally(gate: Gate, ctx: PromotionContext) -> Tally | None:
    """The approvals the gate counts for this promotion (None: the gate asks for none)."""
    if gate.approvals is None:
        return None
    return tally(gate.approvals, ctx.approvals, environment=ctx.environment, digest=ctx.digest,
                 requester=ctx.requester, now=ctx.now)


def _check_approvals(approvals: ApprovalGate | None, ctx: PromotionContext) -> _Found:
    if approvals is None:
        return
    found = tally(approvals, ctx.approvals, environment=ctx.environment, digest=ctx.digest,
                  requester=ctx.requester, now=ctx.now)
    if found.missing:
        yield ("promotion.approvals", approvals_message(
            approvals, repository=ctx.repository, environment=ctx.environment,
            digest=ctx.digest, found=found, requester=ctx.requester))


def _check_verified(verified: VerifiedGate | None, ctx: PromotionContext) -> _Found:
    if verified is None:
        return
    gaps = verification_gaps(verified, ctx.verifications)
    if gaps:
        yield ("promotion.verified", verified_message(
            verified, repository=ctx.repository, environment=ctx.environment,
            digest=ctx.digest, gaps=gaps))


@dataclass(frozen=True)
class HotfixDecision:
    """A hotfix's decision, the violations its `bypass` list set aside, and the hotfix
    approvals it counted."""

    decision: Decision
    bypassed: tuple[Violation, ...]
    approvals: Tally


def evaluate_hotfix(policy: Policy, ctx: PromotionContext) -> HotfixDecision:
    """Decide a hotfix: every gate as for a promotion, those named in the environment's
    `hotfix.bypass` set aside (reported as bypassed), and the hotfix approvals required
    (`promotion.hotfix_approvals`); `latest` and the scan gate always apply."""
    gate = policy.gate(ctx.environment)
    assert gate.hotfix is not None, "callers check that the environment has a hotfix section"
    hotfix = gate.hotfix
    full = evaluate_promotion(policy, ctx)
    skipped = {HOTFIX_BYPASSABLE[name] for name in hotfix.bypass}
    kept = [v for v in full.violations if v.rule not in skipped]
    bypassed = tuple(v for v in full.violations if v.rule in skipped)
    counted = tally(hotfix.approvals, ctx.hotfix_approvals, environment=ctx.environment,
                    digest=ctx.digest, requester=ctx.requester, now=ctx.now)
    if counted.missing:
        message = approvals_message(hotfix.approvals, repository=ctx.repository,
                                    environment=ctx.environment, digest=ctx.digest,
                                    found=counted, requester=ctx.requester)
        message = ("hotfix: " + message.replace("approval(s)", "hotfix approval(s)")
                   .replace("--digest", "--hotfix --digest"))
        kept.append(Violation("promotion.hotfix_approvals", message, policy.name))
    return HotfixDecision(Decision.of(policy, kept), bypassed, counted)
