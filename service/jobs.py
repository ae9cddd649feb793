"""The one module that enqueues RQ jobs, by dotted path, with ids, retries and TTLs."""

from __future__ import annotations

from datetime import timedelta

from rq import Queue, Retry
from rq.job import Job

RECONCILE = "workers.reconcile.reconcile"
JOBS = (RECONCILE,)


def enqueue_reconcile(queue: Queue, delay: timedelta | None = None) -> Job:
    """Queue a reconciliation pass (one at a time: a fixed job id)."""
    options = dict(job_id="tagwarden-reconcile", job_timeout=300, result_ttl=3600,
                   failure_ttl=24 * 3600, retry=Retry(max=3, interval=[5, 30, 60]))
    if delay:
        return queue.enqueue_in(delay, RECONCILE, **options)
    return queue.enqueue(RECONCILE, **options)
