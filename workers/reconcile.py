"""Reconciliation: finish or drop promotion intents, and detect environment-tag drift."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import LockError

from service import drift
from service.promotions import reconcile_intent
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
    for repository in svc.promotions.repositories():
        drifted += len(drift.check_environments(svc, repository))
    result = {"finished": finished, "dropped": dropped, "drifted": drifted}
    log.info("reconciliation: %s", result)
    from datetime import timedelta

    from service.jobs import enqueue_reconcile

    # the next pass (periodic: repairs what a Redis or gateway crash left, detects drift)
    enqueue_reconcile(svc.queue, timedelta(seconds=svc.settings.reconcile_interval))
    return result
