"""Drift: an environment tag moved by someone other than the gateway; record it, put it back."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from service.core import notify
from service.core.governance import policy_for
from service.domain.durations import format_time
from service.services import Services

log = logging.getLogger("tagwarden.drift")


def check_tag(svc: Services, repository: str, tag: str, expected: str, found: str | None,
              kind: str) -> dict[str, Any] | None:
    """Record drift of one tag (expected vs found) and restore it if the policy says so."""
    if found == expected:
        return None
    policy = policy_for(svc, repository)
    event = {
        "id": uuid.uuid4().hex, "action": "drift.detected", "repository": repository,
        "tag": tag, "kind": kind, "expected_digest": expected, "found_digest": found,
        "timestamp": format_time(datetime.now(UTC)), "policy": policy.name,
        "on_drift": policy.on_drift, "restored": False,
    }
    if policy.on_drift == "restore":
        manifest = svc.registry.get_manifest(repository, expected)
        if manifest is not None:
            svc.registry.put_manifest(repository, tag, manifest)
            svc.tags.set(repository, tag, expected)
            event["restored"] = True
        else:
            event["error"] = f"{expected} is no longer in the registry; cannot restore"
    svc.events.record(event)
    notify.emit(svc, "drift.detected", event)
    log.warning("drift on %s:%s expected %s found %s (restored=%s)", repository, tag, expected,
                found, event["restored"])
    return event


def check_environments(svc: Services, repository: str) -> list[dict[str, Any]]:
    """Compare every environment tag of a repository with its pointer."""
    events = []
    for env, digest in svc.environments.digests(repository).items():
        if svc.promotions.intent(repository, env) is not None:
            continue  # a promotion is mid-flight or awaiting reconciliation
        found = svc.registry.head_manifest(repository, env)
        event = check_tag(svc, repository, env, digest, found, "environment")
        if event:
            events.append(event)
    return events
