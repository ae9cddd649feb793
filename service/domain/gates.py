"""Promotion gates: stage order, tag classes, `latest`, scan verdict, soak, freeze and
attached artifacts (referrers)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from service.domain.durations import format_duration, format_time
from service.domain.policy_model import (
    SEVERITIES,
    Decision,
    FreezeWindow,
    Gate,
    IgnoreEntry,
    Policy,
    ReferrerRequirement,
    ScanGate,
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
    ]
    return Decision.of(policy, [Violation(rule, message, policy.name) for rule, message in found])


_Found = Iterable[tuple[str, str]]


def evaluate_rollback(policy: Policy, ctx: PromotionContext) -> Decision:
    """Decide a rollback: the promotion gates without soak and scan (the emergency exit)."""
    gate = policy.gate(ctx.environment)
    relaxed = replace(gate, scan=None, soak_seconds=0)
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
