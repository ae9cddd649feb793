"""Approvals and verification evidence: who may approve, what counts, what is missing.

Pure functions over the records the stores keep (dicts, times as RFC 3339 text): the
promotion gates, the approval endpoint and dry runs all decide through these.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.domain.durations import format_duration
from service.domain.policy_model import ApprovalGate, VerifiedGate

ROLES = ("reader", "ci", "admin")
APPROVER_KINDS = ("role", "token", "glob")
RESULTS = ("passed", "failed")


def parse_approver(spec: str) -> tuple[str, str]:
    """(`role`|`token`|`glob`, value) of an approver entry; ValueError naming the problem."""
    kind, sep, value = spec.partition(":")
    if not sep or kind not in APPROVER_KINDS or not value:
        raise ValueError(f"approver {spec!r} must be role:<reader|ci|admin>, token:<name> or "
                         "glob:<pattern of token names>")
    if kind == "role" and value not in ROLES:
        raise ValueError(f"approver {spec!r}: unknown role {value!r} (reader, ci, admin)")
    return kind, value


def approver_matches(spec: str, name: str, role: str) -> bool:
    """Whether a token (its name and role) is the approver entry `spec` names: `role:X` the
    token's role exactly, `token:NAME` its name, `glob:PATTERN` its name by shell glob."""
    kind, value = parse_approver(spec)
    if kind == "role":
        return role == value
    if kind == "token":
        return name == value
    return fnmatch.fnmatchcase(name, value)


def may_approve(gate: ApprovalGate, name: str, role: str) -> bool:
    """Whether the token may give an approval this gate counts."""
    return any(approver_matches(spec, name, role) for spec in gate.approvers)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as the stores write it."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expires(gate: ApprovalGate, approval: Mapping[str, Any]) -> datetime:
    """When an approval stops counting: its own expiry, or earlier under a policy whose
    `valid_for` was shortened since."""
    created = parse_time(str(approval["created_at"]))
    return min(parse_time(str(approval["expires_at"])),
               created + timedelta(seconds=gate.valid_for_seconds))


@dataclass(frozen=True)
class Tally:
    """What an approvals gate sees: the approvals it counts (one per approver, newest first),
    how many are missing, and whether the requester's own approval was set aside."""

    counted: tuple[Mapping[str, Any], ...]
    missing: int
    requester_excluded: bool

    @property
    def ids(self) -> list[str]:
        """The ids of the counted approvals (what the promotion record names)."""
        return [str(a["id"]) for a in self.counted]


def tally(gate: ApprovalGate, approvals: Iterable[Mapping[str, Any]], *, environment: str,
          digest: str, requester: str | None, now: datetime) -> Tally:
    """Count valid approvals of `digest` for `environment` from distinct approvers allowed by
    the gate *now* (a narrowed approvers list or a shorter `valid_for` applies to earlier
    approvals too); expired and withdrawn ones never count, nor the requester's own unless
    `requester_may_approve`."""
    newest_first = sorted(approvals, key=lambda a: (str(a.get("created_at")), str(a["id"])),
                          reverse=True)
    counted: dict[str, Mapping[str, Any]] = {}
    excluded = False
    for approval in newest_first:
        name = str(approval.get("approver") or "")
        if (approval.get("digest") != digest or approval.get("environment") != environment
                or approval.get("withdrawn_at") or not name
                or expires(gate, approval) <= now
                or not may_approve(gate, name, str(approval.get("approver_role") or ""))):
            continue
        if name == requester and not gate.requester_may_approve:
            excluded = True
            continue
        counted.setdefault(name, approval)
    found = tuple(counted.values())[: gate.required]
    return Tally(found, max(0, gate.required - len(counted)), excluded)


def approvals_message(gate: ApprovalGate, *, repository: str, environment: str, digest: str,
                      found: Tally, requester: str | None) -> str:
    """Why the approvals gate says no: how many are missing and who may give them."""
    have = len(found.counted)
    names = f" ({', '.join(sorted(str(a['approver']) for a in found.counted))})" if have else ""
    who = ", ".join(gate.approvers)
    if requester and not gate.requester_may_approve:
        who += f"; not the requester '{requester}'"
    own = (" (the requester's own approval does not count)"
           if found.requester_excluded else "")
    return (
        f"'{environment}' needs {gate.required} approval(s) of {digest} from distinct "
        f"approvers; {have} valid{names}{own}, {found.missing} missing. May approve: {who}. "
        f"Approve with `tagwarden approve --repository {repository} --env {environment} "
        f"--digest {digest}` (POST /api/v1/approvals); approvals expire after "
        f"{format_duration(gate.valid_for_seconds)}"
    )


def verification_gaps(gate: VerifiedGate, latest: Mapping[str, Mapping[str, Any]]
                      ) -> list[str]:
    """For each named check whose newest result in `gate.in_env` is not `passed`, a phrase
    saying what was found (`acceptance: failed (url)`, `smoke: never recorded`)."""
    gaps = []
    for check in gate.checks:
        record = latest.get(check)
        if record is None:
            gaps.append(f"{check}: never recorded")
        elif record.get("result") != "passed":
            where = f", {record['url']}" if record.get("url") else ""
            gaps.append(f"{check}: newest result {record.get('result')} "
                        f"({record.get('created_at')}{where})")
    return gaps


def verified_message(gate: VerifiedGate, *, repository: str, environment: str, digest: str,
                     gaps: Sequence[str]) -> str:
    """Why the verified gate says no, and how to record the evidence."""
    return (
        f"'{environment}' needs passing checks recorded in '{gate.in_env}' for {digest}: "
        f"{'; '.join(gaps)}. Run the checks against '{gate.in_env}', then record each with "
        f"`tagwarden verify --repository {repository} --env {gate.in_env} --digest {digest} "
        f"--name <check> --result passed` (POST /api/v1/verifications)"
    )
