"""Push and delete governance for /v2: the policy decides before the registry sees a byte."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from service import notify
from service.domain.durations import format_time
from service.domain.errors import PolicyDenied
from service.domain.policy import (
    Decision,
    Policy,
    evaluate_delete,
    evaluate_push,
    evaluate_tag_delete,
    match_policy,
)
from service.domain.tags import matches_any
from service.services import Services

log = logging.getLogger("tagwarden.governance")


def policy_for(svc: Services, repository: str) -> Policy:
    """The policy deciding for a repository (stored, most specific glob, or the default)."""
    return match_policy(repository, svc.policies.all())


def current_digest(svc: Services, repository: str, tag: str) -> str | None:
    """The digest a tag points to: the gateway's map, else the registry (content from before)."""
    known = svc.tags.get(repository, tag)
    if known is not None:
        return known
    found = svc.registry.head_manifest(repository, tag)
    if found:
        svc.tags.set(repository, tag, found)
    return found


def denial_message(decision: Decision) -> str:
    """One line that docker and skopeo print: every violation with its rule id."""
    return "; ".join(f"{v.message} [{v.rule}, policy {v.policy}]" for v in decision.violations)


def deny(svc: Services, action: str, decision: Decision, actor: str | None,
         actor_id: str | None = None, **target: Any) -> None:
    """Record a denial as a `push.denied` event and raise PolicyDenied."""
    event = {
        "id": uuid.uuid4().hex,
        "action": "push.denied",
        "operation": action,
        "timestamp": format_time(datetime.now(UTC)),
        "actor": actor,
        "policy": decision.policy,
        "violations": [v.to_dict() for v in decision.violations],
        **target,
    }
    try:
        svc.events.record(event)
    except Exception:  # noqa: BLE001 - the denial itself must still reach the client
        log.warning("could not record denial event for %s", target.get("repository"))
    notify.emit(svc, "push.denied", event)
    try:
        svc.audit.append({
            "id": uuid.uuid4().hex, "time": event["timestamp"], "action": f"{action}.denied",
            "actor": {"id": actor_id, "name": actor}, "target": target, "outcome": "denied",
            "status": 403, "repository": target.get("repository"), "request_id": None,
        })
    except Exception:  # noqa: BLE001
        log.warning("could not audit denial for %s", target.get("repository"))
    raise PolicyDenied(denial_message(decision), decision)


def is_immutable(policy: Policy, tag: str) -> bool:
    """Whether a tag is in one of the policy's immutable classes."""
    return tag not in policy.environments and matches_any(tag, policy.push.immutable,
                                                          policy.environments)


def check_push(svc: Services, repository: str, tag: str, digest: str | None,
               policy: Policy | None = None) -> Decision:
    """The decision for pushing `digest` under `tag` (no side effects); only an immutable
    tag needs to know where it points now."""
    policy = policy or policy_for(svc, repository)
    current = current_digest(svc, repository, tag) if is_immutable(policy, tag) else None
    return evaluate_push(policy, repository, tag, digest or "", current)


def check_delete(svc: Services, repository: str, reference: str) -> Decision:
    """The decision for deleting a manifest by digest, or a tag (no side effects)."""
    policy = policy_for(svc, repository)
    if reference.startswith("sha256:"):
        pointers = svc.environments.digests(repository)
        tags = [t for t, d in svc.tags.all(repository).items() if d == reference]
        return evaluate_delete(policy, repository, reference, tags, pointers)
    return evaluate_tag_delete(policy, repository, reference, current_digest(svc, repository,
                                                                             reference))


def after_manifest_put(svc: Services, repository: str, tag: str | None, digest: str) -> None:
    """Remember what a successful push created."""
    if tag:
        svc.tags.set(repository, tag, digest)


def after_manifest_delete(svc: Services, repository: str, digest: str) -> None:
    """Forget tags removed with a digest, except immutable ones (they may not come back
    pointing anywhere else)."""
    policy = policy_for(svc, repository)
    for tag, known in svc.tags.all(repository).items():
        if known == digest and not matches_any(tag, policy.push.immutable, policy.environments):
            svc.tags.forget(repository, tag)


def evaluate(svc: Services, args: dict[str, Any]) -> Decision:
    """The dry-run endpoint: the same decision the real push, delete or promotion gets."""
    from service.domain.errors import InvalidRequest

    repository, action = args["repository"], args["action"]
    if action == "push":
        if "tag" not in args:
            raise InvalidRequest("a push needs a tag", errors={"tag": ["required for push"]})
        return check_push(svc, repository, args["tag"], args.get("digest"))
    if action == "delete":
        reference = args.get("digest") or args.get("tag")
        if not reference:
            raise InvalidRequest("a delete needs a digest or a tag",
                                 errors={"digest": ["digest or tag required for delete"]})
        return check_delete(svc, repository, reference)
    from service.promotions import evaluate_request

    return evaluate_request(svc, args)


def scan_after_push(svc: Services, repository: str, digest: str) -> None:
    """Queue a scan of a pushed manifest when the policy asks for it (never fails the push)."""
    scan = svc.extra.get("scan_on_push")
    if scan is None or not policy_for(svc, repository).scan_on_push:
        return
    try:
        scan(repository, digest)
    except Exception:  # noqa: BLE001 - the registry already has the manifest
        log.exception("could not queue scan-on-push for %s@%s", repository, digest)
