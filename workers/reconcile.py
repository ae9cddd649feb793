"""Reconciliation: finish or drop promotion intents, and detect environment-tag drift."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import LockError

from service.core import drift
from service.core.promotions import reconcile_intent
from service.core.recovery import reconcile_restore
from workers.context import services

log = logging.getLogger("tagwarden.reconcile")


def reconcile() -> dict[str, Any]:
    """One pass over every leftover intent and every environment pointer."""
    svc = services()
    finished, dropped, drifted = [], 0, 0
    for repository, environment in svc.promotions.pending_intents():
        lock = svc.promotions.lock(repository, environment, wait=5.0)
        try:
            if not lock.acquire():
                continue  # a live promotion holds it and will reconcile itself
        except LockError:
            continue
        try:
            record = reconcile_intent(svc, repository, environment)
            if record is not None:
                finished.append(record["id"])
            else:
                dropped += 1
        finally:
            try:
                lock.release()
            except LockError:
                pass
    # after a restore, what the registry holds is adopted and recorded first (drift repair
    # would put the backup's pointers back over changes made after the backup)
    adopted = reconcile_restore(svc)
    for repository in svc.promotions.repositories():
        drifted += len(drift.check_environments(svc, repository))
    result = {"finished": finished, "dropped": dropped, "drifted": drifted}
    if adopted is not None:
        result["restore_reconciled"] = [record["id"] for record in adopted]
    log.info("reconciliation: %s", result)
    from datetime import timedelta

    from service.core.jobs import enqueue_reconcile

    # the next pass (periodic: repairs what a Redis or gateway crash left, detects drift)
    enqueue_reconcile(svc.queue, timedelta(seconds=svc.settings.reconcile_interval))
    return result
