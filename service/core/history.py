"""Rollbacks, history and time travel: what each environment pointed to, now or at T."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.core import notify
from service.core.governance import denial_message, policy_for
from service.core.promotions import (
    _check_target,
    _record,
    build_context,
    client_key,
    digest_tags,
    fingerprint,
    idempotent,
    move,
)
from service.domain.durations import format_time
from service.domain.errors import Conflict, NotFound, PolicyDenied, Unprocessable
from service.domain.gates import evaluate_rollback
from service.obs import metrics
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
    undone = svc.environments.pointers(repository).get(environment) or {}
    record["reverts"] = undone.get("promotion_id")  # the promotion this rollback undoes
    done = move(svc, record, manifest, expected, idem)
    notify.emit(svc, "rollback.succeeded", done)
    return done


def check_listing(svc: Services, repository: str | None, environment: str | None) -> None:
    """NotFound for a repository that has neither promotions nor anything in the registry,
    Unprocessable for an environment its policy does not have: an empty answer would say
    "nothing happened there" about something that does not exist."""
    if repository is None:
        return
    if not svc.promotions.known(repository) and not svc.registry.list_tags(repository):
        raise NotFound(f"repository {repository!r} not found: it has no promotions and "
                       "nothing in the registry")
    policy = policy_for(svc, repository)
    if environment is not None and environment not in policy.environments:
        raise Unprocessable(
            f"unknown environment {environment!r}: policy {policy.name!r} has "
            f"{', '.join(policy.environments)}",
            errors={"environment": [f"must be one of {', '.join(policy.environments)}"]})


def environments(svc: Services, repository: str, at: datetime | None) -> dict[str, Any]:
    """Each environment's digest now, or as it was at `at`; a digest's tags are the same in
    every environment that points to it (now: the registry's, at `at`: all recorded then)."""
    check_listing(svc, repository, None)
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
    _same_tags(svc, repository, policy.environments, rows, current=at is None)
    when = format_time(at if at is not None else datetime.now(UTC))
    return {"repository": repository, "at": when, "environments": rows}


def _same_tags(svc: Services, repository: str, envs: tuple[str, ...],
               rows: list[dict[str, Any]], current: bool) -> None:
    """One tag list per digest: what the registry holds now, or (at a past time) every tag
    the records of that digest carried, so two environments never disagree about a digest."""
    by_digest: dict[str, set[str]] = {}
    for row in rows:
        if row["digest"]:
            by_digest.setdefault(row["digest"], set()).update(row["tags"] or [])
    for digest in by_digest if current else ():
        inputs = svc.promotions.gate_inputs(repository, digest, [])
        by_digest[digest] = set(digest_tags(svc, repository, digest, envs, inputs))
    for row in rows:
        if row["digest"]:
            row["tags"] = sorted(by_digest[row["digest"]])
