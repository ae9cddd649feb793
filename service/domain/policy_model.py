"""The policy model: dataclasses, decisions and the built-in default policy."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.domain.errors import PolicyDenied

SEVERITIES = ("critical", "high", "medium", "low", "unknown")  # worst first
ON_DRIFT = ("restore", "record")


@dataclass(frozen=True)
class IgnoreEntry:
    """An advisory the scan gate skips until `until` (None: no expiry)."""

    id: str
    until: datetime | None = None
    reason: str = ""


@dataclass(frozen=True)
class ScanGate:
    """Scan requirement of a gate: a succeeded scan, no finding above `max_severity`."""

    required: bool = True
    max_severity: str | None = None
    ignore: tuple[IgnoreEntry, ...] = ()


@dataclass(frozen=True)
class FreezeWindow:
    """No promotion into the environment while start <= now < end."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class ReferrerRequirement:
    """An artifact (SBOM, signature, attestation) that must be attached to the digest: a
    manifest of this artifact type whose `subject` is the digest (OCI 1.1 referrers)."""

    artifact_type: str


@dataclass(frozen=True)
class ApprovalGate:
    """Four eyes: `required` valid approvals of the digest for the environment, from distinct
    approvers matching `approvers` (`role:X`, `token:NAME`, `glob:PATTERN`)."""

    required: int
    approvers: tuple[str, ...]
    requester_may_approve: bool = False
    valid_for_seconds: int = 24 * 3600


@dataclass(frozen=True)
class VerifiedGate:
    """Each named check's newest result for the digest in environment `in_env` is `passed`."""

    in_env: str
    checks: tuple[str, ...]


# gates a hotfix may skip (`latest` and the scan gate never); rule id of each
HOTFIX_BYPASSABLE = {"from": "promotion.from", "tags": "promotion.tags",
                     "soak": "promotion.soak", "freeze": "promotion.freeze",
                     "referrers": "promotion.referrers", "approvals": "promotion.approvals",
                     "verified": "promotion.verified"}


@dataclass(frozen=True)
class HotfixGate:
    """Fix forward: a promotion marked as a hotfix (with a reason) skips the `bypass` gates
    once `approvals` (hotfix approvals, a set of their own) are there."""

    bypass: tuple[str, ...]
    approvals: ApprovalGate


@dataclass(frozen=True)
class Gate:
    """Promotion gate of one target environment; the empty gate lets everything through."""

    from_env: str | None = None
    tags: tuple[str, ...] = ()
    scan: ScanGate | None = None
    soak_seconds: int = 0
    freeze: tuple[FreezeWindow, ...] = ()
    referrers: tuple[ReferrerRequirement, ...] = ()
    approvals: ApprovalGate | None = None
    verified: VerifiedGate | None = None
    hotfix: HotfixGate | None = None


@dataclass(frozen=True)
class PushRules:
    """Class specs allowed, denied and immutable on push."""

    allow: tuple[str, ...] = ("semver", "git-sha", "latest", "other")
    deny: tuple[str, ...] = ()
    immutable: tuple[str, ...] = ("semver", "git-sha")


@dataclass(frozen=True)
class Retention:
    """What a retention run keeps in each repository of the policy (issue 19); everything
    else may go. `keep_newer_than` is in seconds; `schedule` is a cron expression or None
    (runs only on demand)."""

    keep_per_environment: int = 5
    keep_releases: int = 20
    keep_newer_than: int = 14 * 86400
    delete_untagged: bool = True
    schedule: str | None = None


@dataclass(frozen=True)
class Policy:
    """A named policy applying to repositories by glob; treat as immutable."""

    name: str
    repositories: tuple[str, ...]
    environments: tuple[str, ...] = ("develop", "staging", "production")
    push: PushRules = field(default_factory=PushRules)
    promotion: Mapping[str, Gate] = field(default_factory=dict)
    scan_on_push: bool = True
    on_drift: str = "restore"
    retention: Retention | None = None  # None: retention never touches these repositories

    def gate(self, environment: str) -> Gate:
        """The gate into `environment` (the empty gate when none is configured)."""
        return self.promotion.get(environment) or Gate()


@dataclass(frozen=True)
class Violation:
    """One broken rule: its id, why and what to do instead, and the deciding policy."""

    rule: str
    message: str
    policy: str

    def to_dict(self) -> dict[str, str]:
        """The API shape of a violation."""
        return {"rule": self.rule, "message": self.message, "policy": self.policy}


@dataclass(frozen=True)
class Decision:
    """The outcome of every evaluation: allowed or not, the policy, the violations."""

    allowed: bool
    policy: str
    violations: tuple[Violation, ...] = ()

    @classmethod
    def of(cls, policy: Policy, violations: Iterable[Violation]) -> Decision:
        """A decision that is allowed exactly when there are no violations."""
        found = tuple(violations)
        return cls(allowed=not found, policy=policy.name, violations=found)

    @property
    def rules(self) -> list[str]:
        """The rule ids of the violations, in order."""
        return [v.rule for v in self.violations]

    def to_dict(self) -> dict[str, Any]:
        """`{"allowed", "policy", "violations": [{"rule", "message", "policy"}]}`."""
        return {
            "allowed": self.allowed,
            "policy": self.policy,
            "violations": [v.to_dict() for v in self.violations],
        }

    def raise_if_denied(self) -> None:
        """Raise PolicyDenied carrying this decision when it is not allowed."""
        if not self.allowed:
            first = self.violations[0]
            message = f"denied by policy '{self.policy}' ({first.rule}): {first.message}"
            raise PolicyDenied(message, decision=self)


DEFAULT_POLICY = Policy(
    name="default",
    repositories=("*",),
    environments=("develop", "staging", "production"),
    push=PushRules(
        allow=("semver", "git-sha", "latest", "other"),
        deny=(),
        immutable=("semver", "git-sha"),
    ),
    promotion={
        "develop": Gate(),
        "staging": Gate(from_env="develop", tags=("semver", "git-sha")),
        "production": Gate(
            from_env="staging",
            tags=("semver", "git-sha"),
            scan=ScanGate(required=True, max_severity="high"),
        ),
    },
    scan_on_push=True,
    on_drift="restore",
)
