"""Rollbacks, history and time travel: what each environment pointed to, now or at T."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service import metrics, notify
from service.domain.durations import format_time
from service.domain.errors import Conflict, NotFound, PolicyDenied, Unprocessable
from service.domain.gates import evaluate_rollback
from service.governance import denial_message, policy_for
from service.promotions import (
    _check_target,
    _record,
    build_context,
    client_key,
    fingerprint,
    idempotent,
    move,
)
from service.services import Services

SEARCH_DEPTH = 1000


def _target(svc: Services, repository: str, environment: str, to: str) -> dict[str, Any]:
    """The history record to go back to: the newest other digest, or a named promotion."""
    current = svc.environments.digests(repository).get(environment)
    if current is None:
        raise NotFound(f"environment {environment!r} of {repository} has no promotion to undo")
    if to != "previous":
        record = svc.promotions.record(to)
        if record is None or record["repository"] != repository:
            raise NotFound(f"promotion {to!r} not found for {repository}")
        if record["environment"] != environment:
            raise Unprocessable(f"promotion {to!r} is of environment {record['environment']!r}",
                                errors={"to": [f"must be a promotion to {environment!r}"]})
        return record
    for record in svc.promotions.recent(repository, environment, SEARCH_DEPTH):
        if record["digest"] != current:
            return record
    raise NotFound(f"no earlier digest of {environment!r} in {repository} to roll back to")


def rollback(svc: Services, req: dict[str, Any], actor: str | None,
             idem_key: str | None = None) -> tuple[int, dict[str, Any], bool]:
    """POST /rollbacks: (201, record, replayed). Back to the previous digest (or a named
    promotion's), recorded as such. Soak and scan gates are skipped (the emergency exit); the
    digest must still exist. A replayed key answers before the target is looked for: "previous"
    would name another digest once the first attempt has moved the environment."""
    return idempotent(svc, idem_key, fingerprint("rollback", req),
                      lambda idem: _rollback(svc, req, actor, idem))


def _rollback(svc: Services, req: dict[str, Any], actor: str | None,
              idem: dict[str, str] | None) -> dict[str, Any]:
    repository, environment = req["repository"], req["environment"]
    expected = req.get("expected_digest")
    policy = policy_for(svc, repository)
    _check_target(policy, repository, environment)
    current = svc.environments.digests(repository).get(environment)
    if expected is not None and expected != current:
        raise Conflict(f"{environment} of {repository} points to {current or 'nothing'}, not "
                       f"the expected {expected}: nothing was rolled back")
    target = _target(svc, repository, environment, req.get("to") or "previous")
    manifest = svc.registry.get_manifest(repository, target["digest"])
    if manifest is None:
        raise NotFound(f"digest {target['digest']} of promotion {target['id']} is no longer in "
                       f"{repository}; it cannot be restored")
    ctx = build_context(svc, policy, repository, environment, "digest", target["digest"],
                        manifest.digest)
    decision = evaluate_rollback(policy, ctx)
    metrics.decision("rollback", decision)
    record = _record("rollback", repository, environment, manifest, None,
                     {"digest": target["digest"], "promotion": target["id"]},
                     list(ctx.digest_tags), actor, req.get("reason"), policy.name)
    if not decision.allowed:
        raise PolicyDenied(denial_message(decision), decision)
    record["idempotency_key"] = client_key(idem)
    done = move(svc, record, manifest, expected, idem)
    notify.emit(svc, "rollback.succeeded", done)
    return done


def environments(svc: Services, repository: str, at: datetime | None) -> dict[str, Any]:
    """Each environment's digest now, or as it was at `at`."""
    policy = policy_for(svc, repository)
    rows = []
    if at is None:
        pointers = svc.environments.pointers(repository)
        for env in policy.environments:
            p = pointers.get(env) or {}
            rows.append({"name": env, "digest": p.get("digest"),
                         "promotion_id": p.get("promotion_id"),
                         "promoted_at": p.get("promoted_at"), "tags": p.get("tags", [])})
    else:
        at_ms = int(at.timestamp() * 1000)
        for env in policy.environments:
            r = svc.promotions.at(repository, env, at_ms) or {}
            rows.append({"name": env, "digest": r.get("digest"), "promotion_id": r.get("id"),
                         "promoted_at": r.get("created_at"), "tags": r.get("tags", [])})
    when = format_time(at if at is not None else datetime.now(UTC))
    return {"repository": repository, "at": when, "environments": rows}
