"""Retention runs: snapshot a repository, select what stays (service.domain.retention), delete
the rest through the registry API, report every digest with its tags, bytes and reasons.

Retention is the policy itself acting: it may delete a digest carrying an immutable tag (the
binding stays, so the tag can never name other content), never what the selection keeps.
Each deletion is re-checked just before its DELETE against what may have changed since the
snapshot (an environment moved there, a promotion or scan started)."""

from __future__ import annotations

import fnmatch
import logging
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from service.core import governance, jobs, notify
from service.domain.durations import format_time
from service.domain.errors import NotFound
from service.domain.policy import Policy, match_policy
from service.domain.policy_model import Retention
from service.domain.retention import (
    RepositorySnapshot,
    Selection,
    bytes_of,
    last_fire,
    select,
)
from service.services import Services

log = logging.getLogger("tagwarden.retention")
INDEX_DEPTH = 4  # an index of indexes of indexes is already exotic
SCHEDULE_GRACE = 600  # a schedule slot older than this when first noticed is skipped


def _now() -> str:
    return format_time(datetime.now(UTC))


# -- hooks ----------------------------------------------------------------------------------
def pending_approvals(svc: Services, repository: str) -> set[str]:
    """Digests of a repository with an approval that has not expired yet."""
    return svc.approvals.pending_digests(repository, int(time.time() * 1000))


# -- the snapshot ---------------------------------------------------------------------------
def _references(svc: Services, repository: str, digests: set[str]) -> dict[str, Any]:
    """What every candidate references, children of indexes included (nested ones too)."""
    refs = governance.manifest_refs(svc, repository, sorted(digests))
    for _ in range(INDEX_DEPTH):
        frontier = sorted({c for r in refs.values() for c in r["children"]} - refs.keys())
        if not frontier:
            break
        refs.update(governance.manifest_refs(svc, repository, frontier))
    return refs


def _busy(svc: Services, repository: str, policy: Policy, present: set[str]
          ) -> dict[str, list[str]]:
    """Digests something is working on: a promotion in flight, a pending approval, a scan."""
    busy: dict[str, list[str]] = defaultdict(list)
    for env in policy.environments:
        intent = svc.promotions.intent(repository, env)
        if intent:
            busy[intent["record"]["digest"]].append(f"promotion to {env} in progress")
    for digest in pending_approvals(svc, repository):
        busy[digest].append("approval pending")
    for digest, scan_id in svc.scans.active_many(sorted(present)).items():
        busy[digest].append(f"scan {scan_id} in progress")
    return busy


def snapshot(svc: Services, repository: str, policy: Policy, rules: Retention, now: float
             ) -> tuple[RepositorySnapshot, dict[str, Any]]:
    """What retention knows of a repository now, and each present manifest's references.

    Known digests: every manifest the gateway saw pushed (through it or in the registry's
    notifications), every tag, environment pointer and recent history entry. A digest without
    a recorded push time (content from before the gateway) is recorded as first seen now."""
    if not svc.tags.is_complete(repository):
        governance.sync_tag_map(svc, repository, policy)
    tagmap = svc.tags.all(repository)
    pointers = {e: d for e, d in svc.environments.digests(repository).items() if d}
    history = {env: svc.promotions.distinct_digests(repository, env,
                                                    rules.keep_per_environment + 1)
               for env in policy.environments}
    pushed = svc.retention.pushed(repository)
    candidates = (set(pushed) | set(tagmap.values()) | set(pointers.values())
                  | {d for digests in history.values() for d in digests})
    refs = _references(svc, repository, candidates)
    present = {d for d, r in refs.items() if not r.get("absent")}
    svc.retention.forget(repository, sorted(d for d in pushed if d not in present))
    unseen = {d: now for d in present if d not in pushed}
    svc.retention.set_pushed(repository, unseen)
    tags: dict[str, set[str]] = defaultdict(set)
    for tag, digest in tagmap.items():
        tags[digest].add(tag)
    for tag, binding in svc.bindings.all(repository).items():
        if binding["digest"] in present:
            tags[binding["digest"]].add(tag)
    snap = RepositorySnapshot(
        repository=repository, environments=policy.environments, present=present,
        tags={d: sorted(t) for d, t in tags.items() if d in present}, pointers=pointers,
        env_tags={t: d for t, d in tagmap.items() if t in policy.environments},
        history=history, pushed={**pushed, **unseen},
        children={d: list(r["children"]) for d, r in refs.items() if r.get("children")},
        busy=dict(_busy(svc, repository, policy, present)),
        subjects=svc.referrers.subjects(repository))
    return snap, refs


def plan(svc: Services, repository: str, policy: Policy, now: float | None = None
         ) -> tuple[RepositorySnapshot, Selection, dict[str, Any]]:
    """The snapshot of a repository and what its policy's retention keeps and deletes."""
    rules = policy.retention or Retention()
    now = time.time() if now is None else now
    snap, refs = snapshot(svc, repository, policy, rules, now)
    return snap, select(snap, rules, now), refs


# -- deleting -------------------------------------------------------------------------------
def _late_reason(svc: Services, repository: str, policy: Policy, digest: str) -> str | None:
    """Why a digest selected for deletion must stay after all (something changed since the
    snapshot), or None."""
    for env, pointed in svc.environments.digests(repository).items():
        if pointed == digest:
            return f"{env} points here (since the run started)"
    for env in policy.environments:
        intent = svc.promotions.intent(repository, env)
        if intent and intent["record"]["digest"] == digest:
            return f"promotion to {env} in progress"
    if svc.scans.active_many([digest]):
        return "scan in progress (since the run started)"
    return None


def _delete(svc: Services, run: dict[str, Any], repository: str, digest: str,
            tags: list[str], size: int) -> None:
    """DELETE one manifest by digest in the registry; the tag map forgets its tags, bindings
    stay. Recorded as a `retention.deleted` event and notified."""
    svc.registry.delete_manifest(repository, digest)
    governance.after_manifest_delete(svc, repository, digest)
    event = {"id": uuid.uuid4().hex, "action": "retention.deleted", "repository": repository,
             "digest": digest, "tags": tags, "bytes": size, "run_id": run["id"],
             "actor": run.get("requested_by"), "timestamp": _now()}
    svc.events.record(event)
    notify.emit(svc, "retention.deleted", event)


def apply(svc: Services, run: dict[str, Any], repository: str, policy: Policy,
          now: float | None = None) -> dict[str, Any]:
    """Plan one repository and (unless the run is a dry run) delete what may go: its part of
    the report (`deleted`, `kept`, `bytes_freed`)."""
    snap, selection, refs = plan(svc, repository, policy, now)
    kept = dict(selection.kept)
    deleted: list[dict[str, Any]] = []
    blobs_gone: dict[str, int] = {}
    failed: set[str] = set()
    parents = defaultdict(list)
    for index, children in snap.children.items():
        for child in children:
            parents[child].append(index)
    for digest in selection.deleted:
        tags = snap.tags.get(digest, [])
        why = next((f"its index {p} could not be deleted" for p in parents[digest]
                    if p in failed), None)
        if why is None and not run["dry_run"]:
            why = _late_reason(svc, repository, policy, digest)
        if why is not None:
            kept[digest] = [why]
            failed.add(digest)
            continue
        manifest = svc.registry.get_manifest(repository, digest)
        if manifest is None:  # gone meanwhile (deleted behind the gateway)
            svc.retention.forget(repository, [digest])
            continue
        try:
            parsed = manifest.json()
        except (ValueError, RecursionError):
            parsed = None
        size, blobs = bytes_of(parsed, len(manifest.body))
        if not run["dry_run"]:
            _delete(svc, run, repository, digest, tags, size)
        blobs_gone[digest] = len(manifest.body)
        blobs_gone.update(blobs)
        deleted.append({"repository": repository, "digest": digest, "tags": tags,
                        "bytes": size})
    still_used = {b for d in kept for b in refs.get(d, {}).get("blobs", ())}
    return {
        "deleted": deleted,
        "kept": [{"repository": repository, "digest": d, "tags": snap.tags.get(d, []),
                  "reasons": reasons} for d, reasons in sorted(kept.items())],
        "bytes_freed": sum(n for b, n in blobs_gone.items() if b not in still_used),
    }


# -- runs -----------------------------------------------------------------------------------
def governed_repositories(svc: Services, glob: str | None, policy_name: str | None = None
                          ) -> list[tuple[str, Policy]]:
    """(repository, deciding policy) of the registry's repositories the glob matches whose
    policy has a retention section (and is `policy_name`, when given)."""
    policies = svc.policies.all()
    out = []
    for repository in sorted(svc.registry.catalog()):
        if glob and not fnmatch.fnmatchcase(repository, glob):
            continue
        policy = match_policy(repository, policies)
        if policy.retention is None or (policy_name and policy.name != policy_name):
            continue
        out.append((repository, policy))
    return out


def start_run(svc: Services, repository: str | None, dry_run: bool, actor: str | None,
              trigger: str = "api", policy: str | None = None) -> dict[str, Any]:
    """Record a queued run and enqueue its job (after the record exists)."""
    run: dict[str, Any] = {"id": "ret_" + uuid.uuid4().hex, "status": "queued", "dry_run": dry_run,
           "repository": repository, "policy": policy, "trigger": trigger,
           "requested_by": actor, "created_at": _now(), "started_at": None,
           "finished_at": None, "repositories": [], "deleted": [], "kept": [],
           "bytes_freed": 0, "error": None}
    svc.retention.save_run(run)
    jobs.enqueue_retention(svc.queue, run["id"])
    return run


def execute(svc: Services, run_id: str) -> dict[str, Any]:
    """The job: evaluate every repository of the run, one at a time under its lock."""
    run = svc.retention.run(run_id)
    if run is None:
        raise NotFound(f"retention run {run_id!r} not found")
    run.update(status="running", started_at=_now(), error=None, repositories=[], deleted=[],
               kept=[], bytes_freed=0)
    svc.retention.save_run(run)
    try:
        for repository, policy in governed_repositories(svc, run["repository"], run["policy"]):
            with svc.retention.lock(repository):
                part = apply(svc, run, repository, policy)
            run["repositories"].append({"repository": repository, "policy": policy.name,
                                        "bytes_freed": part["bytes_freed"]})
            run["deleted"].extend(part["deleted"])
            run["kept"].extend(part["kept"])
            run["bytes_freed"] += part["bytes_freed"]
    except Exception as exc:
        run.update(status="failed", finished_at=_now(), error=f"{type(exc).__name__}: {exc}")
        svc.retention.save_run(run)
        raise
    run.update(status="succeeded", finished_at=_now())
    svc.retention.save_run(run)
    log.info("retention run %s: %d deleted, %d kept, %d bytes", run_id, len(run["deleted"]),
             len(run["kept"]), run["bytes_freed"])
    return {"id": run_id, "deleted": len(run["deleted"]), "kept": len(run["kept"])}


def get_run(svc: Services, run_id: str, sees: Any = None) -> dict[str, Any]:
    """A run's report, cut to the repositories `sees` accepts (None: all)."""
    run = svc.retention.run(run_id)
    if run is None:
        raise NotFound(f"retention run {run_id!r} not found")
    if sees is not None:
        for part in ("deleted", "kept", "repositories"):
            run[part] = [item for item in run[part] if sees(item["repository"])]
        run["bytes_freed"] = sum(item["bytes_freed"] for item in run["repositories"])
    return run


def due(svc: Services, now: datetime) -> list[dict[str, Any]]:
    """Start the scheduled runs whose cron slot has come (once per slot, whatever number of
    workers tick): real runs over each scheduling policy's repositories."""
    started = []
    for policy in svc.policies.all():
        rules = policy.retention
        if rules is None or not rules.schedule:
            continue
        fired = last_fire(rules.schedule, now)
        if (now - fired).total_seconds() > SCHEDULE_GRACE:
            continue
        if svc.retention.claim_slot(policy.name, format_time(fired)):
            started.append(start_run(svc, None, False, f"schedule of policy {policy.name}",
                                     trigger="schedule", policy=policy.name))
    return started
