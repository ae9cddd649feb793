"""Push and delete governance for /v2: the policy decides before the registry sees a byte."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from service import notify
from service.domain.durations import format_time
from service.domain.errors import InvalidRequest, PolicyDenied
from service.domain.policy import (
    Decision,
    Policy,
    evaluate_delete,
    evaluate_push,
    evaluate_tag_delete,
    is_immutable,
    match_policy,
)
from service.logs import current_request_id
from service.services import Services
from service.store.tagmap import TagLock

log = logging.getLogger("tagwarden.governance")


def policy_for(svc: Services, repository: str) -> Policy:
    """The policy deciding for a repository (stored, most specific glob, or the default)."""
    return match_policy(repository, svc.policies.all())


def current_digest(svc: Services, repository: str, tag: str) -> str | None:
    """The digest a tag points to: the gateway's map, else the registry (content from before).

    While the map is known complete (it was compared with the registry's tag list less than
    COMPLETE_TTL ago; pushes through the gateway and the registry's notifications keep it
    current since), a tag it does not hold does not exist and the registry is not asked."""
    known, complete, mapped = svc.tags.lookup(repository, tag)
    if known is not None or complete:
        return known
    found = svc.registry.head_manifest(repository, tag)
    if found:
        svc.tags.set(repository, tag, found)
    elif not mapped and not svc.registry.list_tags(repository):
        svc.tags.mark_complete(repository)  # a new repository: nothing to know yet
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
        svc.audit.record(f"{action}.denied", (actor_id, actor), target, "denied", 403,
                         current_request_id())
    except Exception:  # noqa: BLE001
        log.warning("could not audit denial for %s", target.get("repository"))
    raise PolicyDenied(denial_message(decision), decision)


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


def after_manifest_put(svc: Services, repository: str, tag: str | None, digest: str,
                       lock: TagLock | None = None) -> None:
    """Remember what a successful push created (releasing the tag's lock in the same round
    trip when one is held)."""
    if tag:
        svc.tags.set(repository, tag, digest, lock)


def after_manifest_delete(svc: Services, repository: str, digest: str) -> None:
    """Forget tags removed with a digest, except immutable ones (they may not come back
    pointing anywhere else)."""
    policy = policy_for(svc, repository)
    for tag, known in svc.tags.all(repository).items():
        if known == digest and not is_immutable(policy, tag):
            svc.tags.forget(repository, tag)


def evaluate(svc: Services, args: dict[str, Any]) -> Decision:
    """The dry-run endpoint: the same decision the real push, delete or promotion gets."""
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
    if not policy_for(svc, repository).scan_on_push:
        return
    from service.scans import scan_on_push

    try:
        scan_on_push(svc, repository, digest)
    except Exception:  # noqa: BLE001 - the registry already has the manifest
        log.exception("could not queue scan-on-push for %s@%s", repository, digest)
