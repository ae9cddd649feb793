"""Policies: which policy applies to a repository, and the push and delete decisions.

The one module to import policy rules from: it re-exports the model
(`service.domain.policy_model`), the promotion gates (`service.domain.gates`) and the
duration helpers.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from service.domain.durations import format_duration, format_time, parse_duration
from service.domain.errors import InvalidRequest
from service.domain.gates import PromotionContext, evaluate_promotion
from service.domain.policy_model import (
    DEFAULT_POLICY,
    ON_DRIFT,
    SEVERITIES,
    Decision,
    FreezeWindow,
    Gate,
    IgnoreEntry,
    Policy,
    PushRules,
    ScanGate,
    Violation,
)
from service.domain.tags import (
    ENVIRONMENT,
    classify,
    compile_matcher,
    valid_repository,
    valid_tag,
)

__all__ = [
    "DEFAULT_POLICY",
    "ON_DRIFT",
    "SEVERITIES",
    "Decision",
    "FreezeWindow",
    "Gate",
    "IgnoreEntry",
    "Policy",
    "PromotionContext",
    "PushRules",
    "ScanGate",
    "Violation",
    "evaluate_delete",
    "evaluate_promotion",
    "evaluate_push",
    "evaluate_tag_delete",
    "format_duration",
    "format_time",
    "glob_specificity",
    "match_policy",
    "parse_duration",
]


# --- which policy applies ----------------------------------------------------------------


def glob_specificity(pattern: str) -> tuple[int, int]:
    """(literal characters, wildcards) of a glob; `*`, `?` and a `[...]` set are wildcards."""
    literals = wildcards = 0
    i = 0
    while i < len(pattern):
        char = pattern[i]
        end = _set_end(pattern, i) if char == "[" else -1
        if char in "*?":
            wildcards += 1
        elif end > 0:
            wildcards += 1
            i = end
        else:
            literals += 1
        i += 1
    return literals, wildcards


def _set_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the set opened at `start`, or -1 (fnmatch's reading)."""
    j = start + 1
    if j < len(pattern) and pattern[j] == "!":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    end = pattern.find("]", j)
    return end


def match_policy(repository: str, policies: Sequence[Policy]) -> Policy:
    """The most specific policy whose globs match the repository, else DEFAULT_POLICY.

    Globs use fnmatch.fnmatchcase: `*` also crosses `/` (`team-a/*` covers
    `team-a/svc/api`). The best matching glob of each policy counts; more literal
    characters wins, then fewer wildcards, then the policy name alphabetically.
    """
    best: tuple[int, int, str] | None = None
    chosen = DEFAULT_POLICY
    for policy in policies:
        for pattern in policy.repositories:
            if not fnmatch.fnmatchcase(repository, pattern):
                continue
            literals, wildcards = glob_specificity(pattern)
            key = (-literals, wildcards, policy.name)
            if best is None or key < best:
                best, chosen = key, policy
    return chosen


# --- push and delete ---------------------------------------------------------------------


def _check_names(repository: str, tag: str | None = None) -> None:
    if not valid_repository(repository):
        message = f"invalid repository name {repository!r}"
        raise InvalidRequest(message, errors={"repository": [message]})
    if tag is not None and not valid_tag(tag):
        message = f"invalid tag {tag!r}: a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        raise InvalidRequest(message, errors={"tag": [message]})


def _matching(specs: Sequence[str], tag: str, environments: Sequence[str]) -> list[str]:
    return [spec for spec in specs if compile_matcher(spec)(tag, environments)]


def is_immutable(policy: Policy, tag: str) -> bool:
    """Whether a tag is in one of the policy's immutable classes (environment tags are not:
    they move, through the promotion API)."""
    return tag not in policy.environments and bool(
        _matching(policy.push.immutable, tag, policy.environments))


def evaluate_push(
    policy: Policy, repository: str, tag: str, digest: str, current_digest: str | None
) -> Decision:
    """Decide a push of `digest` under `tag`; InvalidRequest if the tag or name is malformed."""
    _check_names(repository, tag)
    envs = policy.environments
    if classify(tag, envs) == ENVIRONMENT:
        message = (
            f"tag '{tag}' is owned by the promotion API: POST /api/v1/promotions "
            f'with {{"repository": "{repository}", "environment": "{tag}", ...}}'
        )
        return Decision.of(policy, [Violation("push.reserved", message, policy.name)])
    violations = []
    denied = _matching(policy.push.deny, tag, envs)
    if denied:
        message = f"tag '{tag}' matches the denied {_listing(denied)}; use another tag name"
        violations.append(Violation("push.denied", message, policy.name))
    if not _matching(policy.push.allow, tag, envs):
        allowed = _listing(policy.push.allow) if policy.push.allow else "nothing"
        message = (
            f"tag '{tag}' (class {classify(tag, envs)}) is not allowed in {repository}; "
            f"allowed: {allowed}"
        )
        violations.append(Violation("push.not_allowed", message, policy.name))
    immutable = _matching(policy.push.immutable, tag, envs)
    if immutable and current_digest is not None and current_digest != digest:
        message = (
            f"tag '{tag}' is immutable ({', '.join(immutable)}) and already points to "
            f"{current_digest}; push under a new tag instead"
        )
        violations.append(Violation("push.immutable", message, policy.name))
    return Decision.of(policy, violations)


def evaluate_delete(
    policy: Policy,
    repository: str,
    digest: str,
    tags_of_digest: Sequence[str],
    env_pointers: Mapping[str, str | None],
    protected_parents: Mapping[str, str] | None = None,
) -> Decision:
    """Decide a manifest delete by digest. The registry removes every tag of the digest with
    it, so the delete is denied while an environment points at the digest, while any of its
    tags is an environment's or immutable, or while an index holding it is protected
    (`protected_parents`: index digest → why it is protected)."""
    _check_names(repository)
    in_use = [env for env, pointed in env_pointers.items() if pointed == digest]
    # An environment tag carried in the registry counts too, even if the pointer disagrees.
    in_use += [t for t in tags_of_digest if t in policy.environments and t not in in_use]
    violations = []
    if in_use:
        order = {env: i for i, env in enumerate(policy.environments)}
        in_use.sort(key=lambda env: (order.get(env, len(order)), env))
        names = ", ".join(f"'{env}'" for env in in_use)
        message = (
            f"digest {digest} is in use by environment {names} of {repository}; "
            "promote another digest there before deleting it"
        )
        violations.append(Violation("delete.in_use", message, policy.name))
    immutable = sorted({t for t in tags_of_digest if is_immutable(policy, t)})
    if immutable:
        names = ", ".join(f"'{t}'" for t in immutable)
        message = (
            f"digest {digest} carries immutable tag {names} of {repository}, bound to it "
            "for good; a delete would free the tag for other content (an admin can release "
            "the binding with DELETE /api/v1/tag-bindings)"
        )
        violations.append(Violation("delete.in_use", message, policy.name))
    for parent, why in sorted((protected_parents or {}).items()):
        message = (f"digest {digest} belongs to index {parent} ({why}) in {repository}; "
                   "it cannot be deleted while the index is protected")
        violations.append(Violation("delete.in_use", message, policy.name))
    return Decision.of(policy, violations)


def evaluate_blob_delete(
    policy: Policy, repository: str, blob: str, users: Mapping[str, str]
) -> Decision:
    """Decide a blob delete: denied while a protected manifest uses the blob (`users`:
    manifest digest → why it is protected)."""
    _check_names(repository)
    if not users:
        return Decision.of(policy, [])
    named = "; ".join(f"{d} ({why})" for d, why in sorted(users.items()))
    message = (f"blob {blob} of {repository} is used by {named}; deleting it would break "
               "what runs there")
    return Decision.of(policy, [Violation("delete.in_use", message, policy.name)])


def evaluate_tag_delete(
    policy: Policy, repository: str, tag: str, current_digest: str | None
) -> Decision:
    """Decide a tag delete: environment tags and existing immutable tags stay."""
    _check_names(repository, tag)
    envs = policy.environments
    if classify(tag, envs) == ENVIRONMENT:
        message = (
            f"tag '{tag}' is the '{tag}' environment pointer, owned by the promotion API; "
            "promote or roll back with POST /api/v1/promotions or /api/v1/rollbacks"
        )
        return Decision.of(policy, [Violation("delete.in_use", message, policy.name)])
    immutable = _matching(policy.push.immutable, tag, envs)
    if immutable and current_digest is not None:
        message = (
            f"tag '{tag}' is immutable ({', '.join(immutable)}) and points to "
            f"{current_digest}; it cannot be deleted"
        )
        return Decision.of(policy, [Violation("push.immutable", message, policy.name)])
    return Decision.of(policy, [])


def _listing(specs: Sequence[str]) -> str:
    return ", ".join(specs)
