"""Verification evidence: CI records check results against a digest in an environment; the
`verified` gate reads the newest result of each check (service/domain/approvals.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.core.approvals import new_id, require_manifest
from service.core.governance import policy_for
from service.core.promotions import _check_target
from service.domain.durations import format_time
from service.services import Services


def record(svc: Services, req: dict[str, Any], actor: str | None) -> dict[str, Any]:
    """POST /verifications: store one result (`passed` or `failed`) of a named check."""
    repository, environment, digest = req["repository"], req["environment"], req["digest"]
    _check_target(policy_for(svc, repository), repository, environment)
    require_manifest(svc, repository, digest)
    result = {
        "id": new_id("vrf"), "repository": repository, "digest": digest,
        "environment": environment, "name": req["name"], "result": req["result"],
        "url": req.get("url"), "details": req.get("details"), "recorded_by": actor,
        "created_at": format_time(datetime.now(UTC)),
    }
    svc.verifications.add(result)
    return result


def listing(svc: Services, args: dict[str, Any], visible: Any) -> dict[str, Any]:
    """GET /verifications: newest first, filtered, within the caller's scopes."""
    items, cursor = svc.verifications.list(args.get("repository"), args.get("digest"),
                                           args.get("environment"), args["limit"],
                                           args.get("cursor"), visible)
    return {"items": items, "next_cursor": cursor}
