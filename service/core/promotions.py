"""Promotions and rollbacks: resolve, gate, lock, write the registry, commit atomically."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import LockError, RedisError

from service.core import manifest_cache, notify, referrers
from service.core.governance import denial_message, policy_for, registry_digest_tags
from service.domain.durations import format_time
from service.domain.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PolicyDenied,
    RegistryUnavailable,
    StoreUnavailable,
    Unprocessable,
)
from service.domain.gates import approval_tally, evaluate_hotfix
from service.domain.policy import Decision, Policy, PromotionContext, evaluate_promotion
from service.domain.tags import valid_repository, valid_tag
from service.obs import metrics
from service.registry.client import Manifest
from service.services import Services
from service.store.promotions import GateInputs

log = logging.getLogger("tagwarden.promotions")
SOURCES = ("tag", "digest", "from_environment")
# How long a promotion whose commit had an unclear outcome (Redis failing over mid-commit)
# keeps looking before it answers 503: longer than a Sentinel failover takes.
SETTLE_SECONDS = 20.0


def new_id() -> str:
    """Sortable, unique promotion id: milliseconds then randomness."""
    return f"prm_{int(time.time() * 1000):012x}{os.urandom(6).hex()}"


def fingerprint(kind: str, body: dict[str, Any]) -> str:
    """Canonical hash of a request body, for Idempotency-Key comparisons."""
    canonical = json.dumps({"kind": kind, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- resolution -----------------------------------------------------------------------------
def _check_target(policy: Policy, repository: str, environment: str) -> None:
    if not valid_repository(repository):
        raise InvalidRequest(f"invalid repository name {repository!r}",
                             errors={"repository": ["not a registry repository name"]})
    if environment not in policy.environments:
        raise Unprocessable(
            f"unknown environment {environment!r}: policy {policy.name!r} has "
            f"{', '.join(policy.environments)}",
            errors={"environment": [f"must be one of {', '.join(policy.environments)}"]},
        )


def resolve_source(svc: Services, policy: Policy, req: dict[str, Any]) -> tuple[str, str, Manifest]:
    """(kind, value, manifest) of the one source given: tag, digest or from_environment."""
    given = [name for name in SOURCES if req.get(name)]
    if len(given) != 1:
        raise Unprocessable("give exactly one of tag, digest or from_environment",
                            errors={name: ["exactly one source is required"] for name in SOURCES})
    kind, value, repository = given[0], req[given[0]], req["repository"]
    if kind == "tag" and not valid_tag(value):
        raise InvalidRequest(f"invalid tag {value!r}", errors={"tag": ["not a registry tag"]})
    if kind == "from_environment":
        if value not in policy.environments:
            raise Unprocessable(f"unknown environment {value!r}",
                                errors={"from_environment": ["not an environment of the policy"]})
        if value == req["environment"]:
            raise Unprocessable("source and target are the same environment",
                                errors={"from_environment": ["must differ from environment"]})
        pointer = svc.environments.pointers(repository).get(value)
        if pointer is None:
            raise NotFound(f"environment {value!r} of {repository} points to nothing yet")
        manifest = _manifest(svc, repository, pointer["digest"])
        if manifest is None:
            raise NotFound(f"manifest {pointer['digest']} of environment {value!r} is no longer "
                           f"in {repository}")
        return "environment", value, manifest
    manifest = _manifest(svc, repository, value)
    if manifest is None:
        raise NotFound(f"{kind} {value!r} not found in repository {repository}")
    return kind, value, manifest


def _manifest(svc: Services, repository: str, reference: str) -> Manifest | None:
    """A source manifest, from this process's cache when the registry's storage links it."""
    return manifest_cache.read(svc.storage, svc.manifest_cache, svc.registry, repository,
                               reference)


def digest_tags(svc: Services, repository: str, digest: str, environments: tuple[str, ...],
                inputs: GateInputs, source_tag: str | None = None) -> list[str]:
    """Tags (not environment tags) that point to the digest in the registry right now.
    The tag map answers while it is known complete (pushes through the gateway and registry
    notifications keep it; drift checks catch tags moved behind the gateway's back);
    otherwise the registry's tag list is compared with it first. `source_tag` was just
    resolved in the registry to the digest, so it counts whatever the map says."""
    if inputs.tags_complete:
        found = {t for t, d in inputs.tags.items() if d == digest and t not in environments}
    else:
        found = set(registry_digest_tags(svc, repository, digest, inputs.tags,
                                         skip=environments))
    if source_tag is not None and source_tag not in environments:
        found.add(source_tag)
    return sorted(found)


def scan_summary(svc: Services, inputs: GateInputs) -> dict[str, Any] | None:
    """The latest succeeded scan of a digest, for the scan gate (None: never scanned)."""
    return svc.scans.get(inputs.scan_id) if inputs.scan_id else None


def build_context(svc: Services, policy: Policy, repository: str, environment: str,
                  kind: str, value: str, digest: str, requester: str | None = None,
                  hotfix: bool = False) -> PromotionContext:
    """Everything the gates need, read from Redis in one round trip (and the registry only
    when the tag map cannot answer); approvals and verifications only when gated."""
    inputs = svc.promotions.gate_inputs(repository, digest, list(policy.environments))
    gate = policy.gate(environment)
    return PromotionContext(
        requester=requester,
        approvals=(svc.approvals.valid_for(repository, environment, digest)
                   if gate.approvals else ()),
        verifications=(svc.verifications.latest(repository, digest, gate.verified.in_env)
                       if gate.verified else {}),
        hotfix_approvals=(svc.approvals.valid_for(repository, environment, digest, hotfix=True)
                          if hotfix and gate.hotfix else ()),
        repository=repository, environment=environment, digest=digest,
        source_kind=kind, source_value=value,  # type: ignore[arg-type]
        digest_tags=digest_tags(svc, repository, digest, policy.environments, inputs,
                                value if kind == "tag" else None),
        history_first_seen={env: _parse_time(at) for env, at in inputs.reached.items()},
        scan=scan_summary(svc, inputs),
        newest_scan=(svc.scans.get(inputs.newest_scan_id)
                     if inputs.scan_id is None and inputs.newest_scan_id else None),
        referrer_types=frozenset(referrers.artifact_types(svc, repository, digest))
        if policy.gate(environment).referrers else frozenset(),
        now=datetime.now(UTC),
    )


def evaluate_request(svc: Services, args: dict[str, Any], requester: str | None = None
                     ) -> Decision:
    """The promotion decision without side effects (the evaluate endpoint and dry runs);
    `requester` is who would promote (their own approvals may not count)."""
    repository = args["repository"]
    environment = args.get("environment")
    if not environment:
        raise InvalidRequest("a promotion needs an environment",
                             errors={"environment": ["required for promote"]})
    policy = policy_for(svc, repository)
    _check_target(policy, repository, environment)
    kind, value, manifest = resolve_source(svc, policy, {**args, "environment": environment})
    ctx = build_context(svc, policy, repository, environment, kind, value, manifest.digest,
                        requester)
    return evaluate_promotion(policy, ctx)


# -- the write path -------------------------------------------------------------------------
def _record(kind: str, repository: str, environment: str, manifest: Manifest,
            previous: str | None, source: dict[str, str], tags: list[str], actor: str | None,
            reason: str | None, policy: str) -> dict[str, Any]:
    return {
        "id": new_id(), "kind": kind, "repository": repository, "environment": environment,
        "digest": manifest.digest, "previous_digest": previous, "source": source, "tags": tags,
        "actor": actor, "reason": reason, "created_at": format_time(datetime.now(UTC)),
        "policy": policy, "approvals": [],
    }


def _registry_write(svc: Services, record: dict[str, Any], manifest: Manifest) -> None:
    """Write the environment tag; on an unclear failure look before deciding."""
    repository, environment = record["repository"], record["environment"]
    try:
        svc.registry.put_manifest(repository, environment, manifest)
    except RegistryUnavailable:
        try:
            landed = svc.registry.head_manifest(repository, environment) == manifest.digest
        except RegistryUnavailable:
            raise  # the intent stays; reconciliation decides once the registry is back
        if not landed:
            svc.promotions.drop_intent(repository, environment)
            raise


def reconcile_intent(svc: Services, repository: str, environment: str,
                     intent: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Finish (registry written) or drop (not written) a leftover intent; call under the lock
    (with the intent when the caller has read it already).
    Returns the committed record when it was finished."""
    intent = intent or svc.promotions.intent(repository, environment)
    if intent is None:
        return None
    record: dict[str, Any] = intent["record"]
    found = svc.registry.head_manifest(repository, environment)
    if found != record["digest"]:
        log.warning("dropping intent %s: registry tag %s is %s", record["id"], environment, found)
        svc.promotions.drop_intent(repository, environment)
        return None
    current = svc.environments.digests(repository).get(environment)
    idem = intent.get("idempotency")
    answer = {"key": idem["key"], "value": {"state": "done", "fp": idem["fp"], "status": 201,
                                            "body": record}} if idem else None
    svc.promotions.commit(record, current, intent["created_ms"], answer, written=True)
    log.info("reconciled intent %s into history", record["id"])
    return record


def move(svc: Services, record: dict[str, Any], manifest: Manifest, expected: str | None,
         idem: dict[str, str] | None) -> dict[str, Any]:
    """Steps 3-5 under the (repository, environment) lock: CAS, intent, registry, commit.
    The previous digest is read here, under the lock, where it cannot change any more; the
    commit releases the lock in its own round trip."""
    repository, environment = record["repository"], record["environment"]
    try:
        lock = svc.promotions.lock(repository, environment)
        if not lock.acquire():
            raise Conflict(f"another promotion of {repository} to {environment} is in progress")
    except LockError:
        raise Conflict(f"could not lock {repository} {environment}") from None
    try:
        intent, current = svc.promotions.locked_state(repository, environment)
        if intent is not None:
            finished = reconcile_intent(svc, repository, environment, intent)
            if finished is not None and idem and (intent.get("idempotency") or {}).get(
                    "key") == idem["key"]:
                return finished
            current = svc.environments.digests(repository).get(environment)
        if expected is not None and expected != current:
            raise Conflict(f"{environment} of {repository} points to {current or 'nothing'}, "
                           f"not the expected {expected}")
        record["previous_digest"] = current
        created_ms = int(time.time() * 1000)
        # the record's time is the history stream's time, so "at T" queries agree with it
        record["created_at"] = format_time(datetime.fromtimestamp(created_ms / 1000, UTC))
        answer = {"key": idem["key"], "value": {"state": "done", "fp": idem["fp"],
                                                "status": 201, "body": record}} if idem else None
        written = current != record["digest"]
        if written:
            _write_intent(svc, {"record": record, "created_ms": created_ms,
                                "repository": repository, "environment": environment,
                                "idempotency": idem})
            _registry_write(svc, record, manifest)
            if svc.settings.fault_pause_after_registry_write:  # fault-injection tests only
                time.sleep(svc.settings.fault_pause_after_registry_write)
        try:
            svc.promotions.commit(record, current, created_ms, answer, written=written,
                                  lock=lock)
        except RedisError as exc:
            return settle(svc, record, exc)
        return record
    finally:
        if lock.local.token is not None:  # not yet released by the commit
            try:
                lock.release()
            except LockError:
                log.warning("lock on %s %s expired before release", repository, environment)


def _write_intent(svc: Services, intent: dict[str, Any]) -> None:
    """The intent, on min_replicas replicas too, before the registry is touched; when they
    do not acknowledge it, it is taken back and the promotion refused (nothing written)."""
    try:
        svc.promotions.write_intent(intent)
    except RedisError:
        try:
            svc.promotions.drop_intent(intent["repository"], intent["environment"])
        except RedisError:
            pass  # never reached the registry: reconciliation drops it
        raise


def settle(svc: Services, record: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """The commit's outcome is unclear (Redis failed, failed over, or its replicas did not
    acknowledge): look until it is decided, so that the answer is the truth — 201 when the
    record is in Redis (on min_replicas replicas), 503 when it is not and never will be.
    An intent of this promotion still pending is finished (registry tag written) or dropped
    here, as reconciliation would."""
    repository, environment = record["repository"], record["environment"]
    deadline = time.monotonic() + SETTLE_SECONDS
    log.warning("promotion %s: commit unclear (%s); settling", record["id"], type(exc).__name__)
    while True:
        try:
            if svc.promotions.confirm(record["id"]):
                return record
            intent = svc.promotions.intent(repository, environment)
            if intent is None or intent["record"]["id"] != record["id"]:
                raise StoreUnavailable(f"promotion of {repository} to {environment} was not "
                                       "recorded (the state store failed); nothing changed")
            if reconcile_intent(svc, repository, environment, intent) is None:
                raise StoreUnavailable(f"promotion of {repository} to {environment} was not "
                                       "completed; nothing changed")
        except (RedisError, Conflict) as failure:
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"promotion {record['id']} of {repository} to {environment}: the state "
                    f"store did not confirm it within {SETTLE_SECONDS:.0f} s ({failure}); "
                    "reconciliation completes or drops it, GET /api/v1/promotions/"
                    f"{record['id']} tells which") from None
            time.sleep(0.25)


def idempotent(svc: Services, idem_key: str | None, fp: str, run: Any
               ) -> tuple[int, Any, bool]:
    """(status, answer, replayed): run `run(idem)` at most once per key, before anything else
    is read, so that a retry replays the first answer even when the state it was computed
    from has moved on since; 422 on another body with the same key."""
    if not idem_key:
        return 201, run(None), False
    stored = svc.promotions.begin_idempotent(idem_key, fp)
    if stored is not None:
        return stored["status"], stored["body"], True
    try:
        return 201, run({"key": idem_key, "fp": fp}), False
    except Exception:  # any failure frees the key so that a retry runs again
        svc.promotions.release_idempotent(idem_key)
        raise


def client_key(idem: dict[str, str] | None) -> str | None:
    """The Idempotency-Key as the client sent it (the stored key is scoped to the caller)."""
    return idem["key"].split(":", 1)[-1] if idem else None


def promote(svc: Services, req: dict[str, Any], actor: str | None,
            idem_key: str | None = None) -> tuple[int, dict[str, Any], bool]:
    """POST /promotions: (201, record, replayed), or 200 and a preview for a dry run."""
    if req.get("dry_run"):
        return (*_promote(svc, req, actor, None), False)
    return idempotent(svc, idem_key, fingerprint("promotion", req),
                      lambda idem: _promote(svc, req, actor, idem)[1])


def _check_hotfix(policy: Policy, req: dict[str, Any]) -> None:
    """A hotfix needs a reason and a `hotfix` section in the target environment's gate."""
    if not (req.get("reason") or "").strip():
        raise Unprocessable("a hotfix needs a reason (what it fixes)",
                            errors={"reason": ["required with hotfix: true"]})
    if policy.gate(req["environment"]).hotfix is None:
        raise Unprocessable(
            f"policy '{policy.name}' has no hotfix section for '{req['environment']}'",
            errors={"hotfix": [f"no hotfix path into '{req['environment']}' in policy "
                               f"'{policy.name}'"]})


def _promote(svc: Services, req: dict[str, Any], actor: str | None,
             idem: dict[str, str] | None) -> tuple[int, dict[str, Any]]:
    if req.get("hotfix"):
        return _hotfix(svc, req, actor, idem)
    repository, environment = req["repository"], req["environment"]
    policy = policy_for(svc, repository)
    _check_target(policy, repository, environment)
    kind, value, manifest = resolve_source(svc, policy, req)
    ctx = build_context(svc, policy, repository, environment, kind, value, manifest.digest,
                        actor)
    decision = evaluate_promotion(policy, ctx)
    source = {kind: value}
    record = _record("promotion", repository, environment, manifest, None, source,
                     list(ctx.digest_tags), actor, req.get("reason"), policy.name)
    counted = approval_tally(policy.gate(environment), ctx)
    record["approvals"] = counted.ids if counted is not None else []
    return _decide_and_move(svc, req, record, decision, manifest, idem, "promotion.succeeded")


def _decide_and_move(svc: Services, req: dict[str, Any], record: dict[str, Any],
                     decision: Decision, manifest: Manifest, idem: dict[str, str] | None,
                     event: str, preview: dict[str, Any] | None = None
                     ) -> tuple[int, dict[str, Any]]:
    """The end every promotion kind shares: a dry run previews (what it would replace), a
    denial is notified and raised, an allowed move is made and notified as `event`."""
    if req.get("dry_run") or not decision.allowed:
        record["previous_digest"] = svc.environments.digests(record["repository"]).get(
            record["environment"])
    if req.get("dry_run"):
        return 200, {**record, "id": None, "dry_run": True, **decision.to_dict(),
                     **(preview or {})}
    metrics.decision("promote", decision)
    if not decision.allowed:
        notify.emit(svc, "promotion.denied", {**record, "violations": decision.to_dict()[
            "violations"]})
        raise PolicyDenied(denial_message(decision), decision)
    record["idempotency_key"] = client_key(idem)
    done = move(svc, record, manifest, req.get("expected_digest"), idem)
    notify.emit(svc, event, done)
    return 201, done


def _hotfix(svc: Services, req: dict[str, Any], actor: str | None,
            idem: dict[str, str] | None) -> tuple[int, dict[str, Any]]:
    """A promotion marked as a hotfix: the gates the policy's `hotfix.bypass` names are set
    aside (listed in the record as `bypassed`) once the hotfix approvals are there;
    recorded as `kind: hotfix`, notified as `hotfix.succeeded`."""
    repository, environment = req["repository"], req["environment"]
    policy = policy_for(svc, repository)
    _check_target(policy, repository, environment)
    _check_hotfix(policy, req)
    kind, value, manifest = resolve_source(svc, policy, req)
    ctx = build_context(svc, policy, repository, environment, kind, value, manifest.digest,
                        actor, hotfix=True)
    found = evaluate_hotfix(policy, ctx)
    decision = found.decision
    record = _record("hotfix", repository, environment, manifest, None, {kind: value},
                     list(ctx.digest_tags), actor, req.get("reason"), policy.name)
    record["approvals"] = found.approvals.ids
    record["bypassed"] = [v.rule for v in found.bypassed]
    status, done = _decide_and_move(
        svc, req, record, decision, manifest, idem, "hotfix.succeeded",
        {"bypassed_violations": [v.to_dict() for v in found.bypassed]})
    if status != 201:
        return status, done
    log.warning("hotfix %s of %s into %s by %s bypassed %s: %s", done["id"], repository,
                environment, actor, record["bypassed"] or "nothing", req.get("reason"))
    return 201, done
