"""Push and delete governance for /v2: the policy decides before the registry sees a byte."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from service.core import notify, referrers
from service.domain.durations import format_time
from service.domain.errors import NotFound, PolicyDenied
from service.domain.manifests import references
from service.domain.policy import (
    Decision,
    Policy,
    evaluate_blob_delete,
    evaluate_delete,
    evaluate_push,
    evaluate_tag_delete,
    is_immutable,
    match_policy,
)
from service.domain.referrers import OCI_INDEX
from service.obs.logs import current_request_id
from service.registry.client import Manifest, sha256_digest
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


def bound_digest(svc: Services, repository: str, tag: str) -> str | None:
    """The digest an immutable tag names for good: its binding, else where it points now
    (content from before the gateway knew the repository)."""
    bound = svc.bindings.get(repository, tag)
    return bound if bound is not None else current_digest(svc, repository, tag)


def check_push(svc: Services, repository: str, tag: str, digest: str | None,
               policy: Policy | None = None) -> Decision:
    """The decision for pushing `digest` under `tag` (no side effects); only an immutable
    tag needs to know what it is bound to."""
    policy = policy or policy_for(svc, repository)
    current = bound_digest(svc, repository, tag) if is_immutable(policy, tag) else None
    return evaluate_push(policy, repository, tag, digest or "", current)


def check_delete(svc: Services, repository: str, reference: str) -> Decision:
    """The decision for deleting a manifest by digest, or a tag (no side effects). The
    registry removes every tag of a digest with it: all of them are weighed."""
    policy = policy_for(svc, repository)
    if reference.startswith("sha256:"):
        pointers = svc.environments.digests(repository)
        tags = registry_tags_of(svc, repository, reference, policy)
        closure = _closure(svc, repository, protected_digests(svc, repository, policy))
        why, parent = closure.get(reference, ("", None))
        parents = {parent: why} if parent else {}
        return evaluate_delete(policy, repository, reference, tags, pointers, parents)
    return evaluate_tag_delete(policy, repository, reference, current_digest(svc, repository,
                                                                             reference))


def check_blob_delete(svc: Services, repository: str, blob: str) -> Decision:
    """The decision for deleting a blob: refused while a protected manifest (what an
    environment points to, its recent rollback targets, a bound immutable release, and the
    children of any of them) uses it."""
    policy = policy_for(svc, repository)
    protected = protected_digests(svc, repository, policy, rollback_targets=True)
    closure = _closure(svc, repository, protected)
    refs = manifest_refs(svc, repository, list(closure))
    users = {d: closure[d][0] for d, r in refs.items() if blob in r["blobs"] or blob == d}
    return evaluate_blob_delete(policy, repository, blob, users)


ROLLBACK_TARGETS = 5  # distinct earlier digests per environment whose blobs stay


def protected_digests(svc: Services, repository: str, policy: Policy,
                      rollback_targets: bool = False) -> dict[str, str]:
    """Digest → why it must stay: environment pointers, digests carrying an environment or
    an immutable tag, bound immutable tags (and, when asked, recent rollback targets)."""
    out: dict[str, str] = {}
    for env, digest in svc.environments.digests(repository).items():
        if digest:
            out.setdefault(digest, f"{env} points here")
    for tag, digest in svc.tags.all(repository).items():
        if tag in policy.environments:
            out.setdefault(digest, f"environment tag '{tag}'")
        elif is_immutable(policy, tag):
            out.setdefault(digest, f"immutable tag '{tag}'")
    for tag, binding in svc.bindings.all(repository).items():
        out.setdefault(binding["digest"], f"immutable tag '{tag}'")
    if rollback_targets:
        for env in policy.environments:
            seen: list[str] = []
            for record in svc.promotions.recent(repository, env, 50):
                if record["digest"] not in seen:
                    seen.append(record["digest"])
            for n, digest in enumerate(seen[:ROLLBACK_TARGETS]):
                out.setdefault(digest, f"rollback target #{n} of {env}")
    return out


def _closure(svc: Services, repository: str, roots: dict[str, str]
             ) -> dict[str, tuple[str, str | None]]:
    """Digest → (why it stays, the index holding it or None) for the roots and every
    manifest their indexes hold (nested indexes included)."""
    out: dict[str, tuple[str, str | None]] = {d: (why, None) for d, why in roots.items()}
    frontier = list(roots)
    for _ in range(4):  # an index of indexes of indexes is already exotic
        refs = manifest_refs(svc, repository, frontier)
        frontier = []
        for digest, ref in refs.items():
            for child in ref["children"]:
                if child not in out:
                    out[child] = (out[digest][0], digest)
                    frontier.append(child)
        if not frontier:
            break
    return out


def manifest_refs(svc: Services, repository: str, digests: list[str]
                  ) -> dict[str, dict[str, Any]]:
    """What each manifest references: cached, else read once from the registry. A digest
    the registry no longer holds references nothing it could still serve."""
    known = svc.manifests.get_many(repository, digests)
    for digest in digests:
        if digest in known:
            continue
        manifest = svc.registry.get_manifest(repository, digest)
        if manifest is None:
            known[digest] = {"index": False, "children": [], "blobs": [], "absent": True}
            continue  # not cached: it may be pushed again
        try:
            parsed = manifest.json()
        except (ValueError, RecursionError):
            parsed = None
        known[digest] = references(parsed, manifest.media_type)
        svc.manifests.put(repository, digest, known[digest])
    return known


def registry_tags_of(svc: Services, repository: str, digest: str, policy: Policy
                     ) -> list[str]:
    """Every tag the registry would remove with a digest, as far as can be known: the tag
    map (compared with the registry's tag list first unless known complete) and the
    immutable bindings."""
    known = svc.tags.all(repository)
    if svc.tags.is_complete(repository):
        tags = {t for t, d in known.items() if d == digest}
    else:
        tags = set(registry_digest_tags(svc, repository, digest, known, policy=policy))
    return sorted(tags | set(svc.bindings.tags_of(repository, digest)))


def sync_tag_map(svc: Services, repository: str, policy: Policy) -> None:
    """Learn the tags the map does not hold from the registry (binding immutable ones), then
    vouch for the map."""
    registry_digest_tags(svc, repository, "", svc.tags.all(repository), policy=policy)


def registry_digest_tags(svc: Services, repository: str, digest: str, known: dict[str, str],
                         skip: tuple[str, ...] = (), policy: Policy | None = None
                         ) -> list[str]:
    """The slow path: list the repository's tags (but `skip`), HEAD those the map does not
    place elsewhere, learn what they point to (binding immutable ones when the `policy` is
    given), then vouch for the map for a while; the tags pointing to `digest`."""
    found = []
    for tag in sorted(svc.registry.list_tags(repository) or []):
        cached = known.get(tag)
        if tag in skip or (cached is not None and cached != digest):
            continue
        actual = svc.registry.head_manifest(repository, tag)
        if actual and actual != cached:
            svc.tags.set(repository, tag, actual,
                         bind=policy is not None and is_immutable(policy, tag))
        if actual == digest:
            found.append(tag)
    svc.tags.mark_complete(repository)
    return found


def after_manifest_put(svc: Services, repository: str, tag: str | None, digest: str,
                       lock: TagLock | None = None) -> None:
    """Remember what a successful push created, binding an immutable tag (it holds the
    tag's lock, released in the same round trip)."""
    if tag:
        svc.tags.set(repository, tag, digest, lock, bind=lock is not None)
    svc.retention.mark_pushed(repository, digest)  # retention's `keep_newer_than` clock


def after_manifest_delete(svc: Services, repository: str, digest: str) -> None:
    """Forget the tags removed with a digest, and its place in the referrers index;
    immutable bindings stay (the tag may never name other content)."""
    referrers.forget(svc, repository, digest)
    for tag, known in svc.tags.all(repository).items():
        if known == digest:
            svc.tags.forget(repository, tag)
    svc.retention.forget(repository, [digest])


UNTAG_ANNOTATION = "io.tagwarden.untag"


def placeholder(repository: str, tag: str) -> Manifest:
    """A manifest of its own for a tag about to be dropped: an empty OCI index (it needs no
    blob in the repository) made unique, so deleting it removes that one tag and nothing
    another tag still names."""
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                       "annotations": {UNTAG_ANNOTATION: f"{repository}:{tag} "
                                                         f"{uuid.uuid4().hex}"}},
                      separators=(",", ":")).encode()
    return Manifest(body, OCI_INDEX, sha256_digest(body))


def untag(svc: Services, repository: str, tag: str) -> str | None:
    """Drop one tag, leaving its digest and the digest's other tags: the registry deletes
    only by digest (every tag of it), so the tag is first moved to a placeholder of its own,
    which is then deleted. The digest the tag named, or None when there was no such tag.
    The caller has checked the policy (check_delete with the tag)."""
    with svc.tags.lock(repository, tag):
        current = svc.registry.head_manifest(repository, tag)
        if current is None:
            return None
        throwaway = placeholder(repository, tag)
        svc.registry.put_manifest(repository, tag, throwaway)
        svc.registry.delete_manifest(repository, throwaway.digest)
        svc.tags.forget(repository, tag)
    return current


def list_bindings(svc: Services, repository: str) -> list[dict[str, Any]]:
    """The bindings of a repository, by tag."""
    return [{"repository": repository, "tag": tag, **binding}
            for tag, binding in sorted(svc.bindings.all(repository).items())]


def release_binding(svc: Services, repository: str, tag: str, reason: str,
                    actor: str | None) -> dict[str, Any]:
    """Drop an immutable tag's binding (and the map's entry while the tag is gone from the
    registry); NotFound when there is none. Recorded as a `binding.released` event."""
    released = svc.bindings.release(repository, tag)
    if released is None:
        raise NotFound(f"no binding of tag {tag!r} in {repository!r}")
    if svc.registry.head_manifest(repository, tag) is None:
        svc.tags.forget(repository, tag)
    svc.events.record({"id": uuid.uuid4().hex, "action": "binding.released",
                       "repository": repository, "tag": tag, "digest": released["digest"],
                       "actor": actor, "reason": reason,
                       "timestamp": format_time(datetime.now(UTC))})
    return {"repository": repository, "tag": tag, **released}


def record_mount(svc: Services, repository: str, source: str | None, digest: str | None,
                 status: int, actor: str | None, actor_id: str | None) -> None:
    """Audit a cross-repository mount request: who linked which blob from where."""
    outcome = "success" if status == 201 else ("error" if status >= 400 else "not_mounted")
    try:
        svc.audit.record("blob.mount", (actor_id, actor),
                         {"repository": repository, "from": source, "digest": digest},
                         outcome, status, current_request_id())
    except Exception:  # noqa: BLE001 - the registry already answered
        log.warning("could not audit a mount into %s", repository)


def scan_after_push(svc: Services, repository: str, digest: str) -> None:
    """Queue a scan of a pushed manifest when the policy asks for it (never fails the push)."""
    if not policy_for(svc, repository).scan_on_push:
        return
    from service.core.scans import scan_on_push

    try:
        scan_on_push(svc, repository, digest)
    except Exception:  # noqa: BLE001 - the registry already has the manifest
        log.exception("could not queue scan-on-push for %s@%s", repository, digest)
