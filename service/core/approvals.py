"""Approvals: granted by the tokens a policy's approvals gate names, withdrawn by their
approver or an admin, counted by the promotion gate (service/domain/approvals.py)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from service.core import notify
from service.core.auth import Principal
from service.core.governance import policy_for
from service.core.promotions import _check_target
from service.domain.approvals import may_approve, parse_time
from service.domain.durations import format_time
from service.domain.errors import Forbidden, NotFound, Unprocessable
from service.services import Services


def new_id(prefix: str) -> str:
    """Sortable, unique id: milliseconds then randomness."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(6).hex()}"


def require_manifest(svc: Services, repository: str, digest: str) -> None:
    """NotFound unless the registry holds the digest in the repository (evidence about a
    digest that is not there would bind nothing)."""
    if svc.registry.head_manifest(repository, digest) is None:
        raise NotFound(f"digest {digest} not found in repository {repository}")


def grant(svc: Services, req: dict[str, Any], approver: Principal) -> dict[str, Any]:
    """POST /approvals: the caller approves a digest for an environment, when the policy's
    approvals gate names it (its role or name); the approval expires after `valid_for`."""
    repository, environment, digest = req["repository"], req["environment"], req["digest"]
    policy = policy_for(svc, repository)
    _check_target(policy, repository, environment)
    hotfix = bool(req.get("hotfix"))
    section = policy.gate(environment).hotfix
    gate = (section.approvals if section else None) if hotfix else policy.gate(
        environment).approvals
    if gate is None:
        what = "hotfix approvals" if hotfix else "approvals"
        raise Unprocessable(
            f"policy '{policy.name}' asks for no {what} into '{environment}'",
            errors={"hotfix" if hotfix else "environment": [
                f"no {what} gate in policy '{policy.name}'"]})
    if not may_approve(gate, approver.name, approver.role):
        raise Forbidden(f"token {approver.name!r} (role {approver.role!r}) may not approve "
                        f"promotions of {repository} into '{environment}'; policy "
                        f"'{policy.name}' allows: {', '.join(gate.approvers)}")
    require_manifest(svc, repository, digest)
    now = datetime.now(UTC)
    record = {
        "id": new_id("apr"), "repository": repository, "environment": environment,
        "digest": digest, "approver": approver.name, "approver_role": approver.role,
        "approver_id": approver.id, "comment": req.get("comment"), "policy": policy.name,
        "created_at": format_time(now),
        "expires_at": format_time(now + timedelta(seconds=gate.valid_for_seconds)),
        "withdrawn_at": None, "withdrawn_by": None,
    }
    if hotfix:  # counted only by the hotfix path (a set of its own in the store)
        record["hotfix"] = True
    svc.approvals.add(record, gate.valid_for_seconds)
    notify.emit(svc, "approval.granted", _event(record, record["approver"], now))
    return with_status(record, now)


def withdraw(svc: Services, approval_id: str, caller: Principal) -> dict[str, Any]:
    """DELETE /approvals/{id}: only its approver (by token name) or an admin; withdrawing
    again answers the same record and notifies nobody."""
    record = svc.approvals.get(approval_id)
    if record is None or not caller.sees(record["repository"]):
        raise NotFound(f"approval {approval_id!r} not found")
    if record["approver"] != caller.name and not caller.at_least("admin"):
        raise Forbidden(f"approval {approval_id} was given by {record['approver']!r}: only "
                        f"that approver or an admin may withdraw it")
    now = datetime.now(UTC)
    done, changed = svc.approvals.withdraw(approval_id, caller.name, format_time(now))
    if done is None:
        raise NotFound(f"approval {approval_id!r} not found")
    if changed:
        notify.emit(svc, "approval.withdrawn", _event(done, caller.name, now))
    return with_status(done, now)


def with_status(record: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The record with `status`: `valid`, `expired` or `withdrawn` (at `now`)."""
    now = now or datetime.now(UTC)
    status = ("withdrawn" if record.get("withdrawn_at") else
              "expired" if parse_time(record["expires_at"]) <= now else "valid")
    return {**record, "status": status}


def _event(record: dict[str, Any], actor: str, now: datetime) -> dict[str, Any]:
    """What subscribers receive: the record as the API shows it, and who acted."""
    shown = {k: v for k, v in with_status(record, now).items() if k != "approver_id"}
    return {**shown, "actor": actor}


def listing(svc: Services, args: dict[str, Any], visible: Any) -> dict[str, Any]:
    """GET /approvals: newest first, filtered, within the caller's scopes."""
    items, cursor = svc.approvals.list(args.get("repository"), args.get("environment"),
                                       args.get("digest"), args["limit"], args.get("cursor"),
                                       visible)
    now = datetime.now(UTC)
    return {"items": [with_status(item, now) for item in items], "next_cursor": cursor}
