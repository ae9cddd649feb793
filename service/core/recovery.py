"""After a restore: compare every environment with the registry and record what changed since
the backup, instead of "repairing" it away.

The registry is what ran: an environment tag that differs from the restored pointer is a
promotion (or rollback, or hotfix) made after the backup was taken. It is recorded as a
promotion record of kind `reconciled` (and a `restore.reconciled` event), the pointer moved
to it; drift repair stays off until this pass has run.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from service.core import notify
from service.core.governance import policy_for
from service.core.promotions import _record, digest_tags
from service.domain.durations import format_time
from service.domain.errors import Conflict
from service.services import Services
from service.store.backup import clear_restore_pending, restore_pending

log = logging.getLogger("tagwarden.recovery")
ACTOR = "tagwarden (restore reconciliation)"


def reconcile_restore(svc: Services) -> list[dict[str, Any]] | None:
    """When a restore is pending: record each environment the registry moved since the
    backup (None: no restore pending)."""
    pending = restore_pending(svc.redis)
    if pending is None:
        return None
    repositories = set(svc.promotions.repositories()) | set(svc.registry.catalog())
    found = []
    for repository in sorted(repositories):
        found += _repository(svc, repository, pending)
    clear_restore_pending(svc.redis)
    log.warning("restore of the backup of %s reconciled: %d environment(s) differed",
                pending.get("backup_created_at"), len(found))
    return found


def _repository(svc: Services, repository: str, pending: dict[str, Any]
                ) -> list[dict[str, Any]]:
    policy = policy_for(svc, repository)
    pointers = svc.environments.digests(repository)
    found = []
    for environment in policy.environments:
        restored = pointers.get(environment)
        actual = svc.registry.head_manifest(repository, environment)
        if actual is None or actual == restored:
            continue  # the registry agrees (or never had the tag: nothing ran there)
        record = _adopt(svc, repository, environment, restored, actual, pending, policy.name)
        if record is not None:
            found.append(record)
    return found


def _adopt(svc: Services, repository: str, environment: str, restored: str | None,
           actual: str, pending: dict[str, Any], policy: str) -> dict[str, Any] | None:
    """Record the registry's digest as a `reconciled` promotion and move the pointer."""
    manifest = svc.registry.get_manifest(repository, actual)
    if manifest is None:
        return None
    envs = policy_for(svc, repository).environments
    inputs = svc.promotions.gate_inputs(repository, actual, [])
    tags = digest_tags(svc, repository, actual, envs, inputs)
    reason = (f"environment tag found at {actual} in the registry after the restore of the "
              f"backup of {pending.get('backup_created_at')}; the backup had "
              f"{restored or 'nothing'} (a change made after the backup)")
    record = _record("reconciled", repository, environment, manifest, restored,
                     {"registry": environment}, tags, ACTOR, reason, policy)
    now = datetime.now(UTC)
    created_ms = int(now.timestamp() * 1000)
    record["created_at"] = format_time(datetime.fromtimestamp(created_ms / 1000, UTC))
    try:
        svc.promotions.commit(record, restored, created_ms, None, written=True)
    except Conflict:
        return None  # someone promoted meanwhile: that promotion is the record
    event = {"id": uuid.uuid4().hex, "action": "restore.reconciled", "repository": repository,
             "tag": environment, "expected_digest": restored, "found_digest": actual,
             "promotion_id": record["id"], "timestamp": record["created_at"],
             "backup_created_at": pending.get("backup_created_at")}
    svc.events.record(event)
    notify.emit(svc, "restore.reconciled", event)
    log.warning("after restore: %s %s is %s in the registry (backup: %s); recorded %s",
                repository, environment, actual, restored, record["id"])
    return record
