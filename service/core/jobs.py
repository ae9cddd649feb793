"""The one module that enqueues RQ jobs, by dotted path, with ids, retries and TTLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from rq import Queue, Retry
from rq.job import Job

from service.obs.logs import job_meta

RECONCILE = "workers.reconcile.reconcile"
DRAIN = "workers.events.drain"
DELIVER = "workers.deliveries.deliver"
SCAN = "workers.scan.run_scan"
RETENTION = "workers.retention.run_retention"
RETENTION_TICK = "workers.retention.tick"
BACKUP = "workers.backup.scheduled_backup"
JOBS = (RECONCILE, DRAIN, DELIVER, SCAN, RETENTION, RETENTION_TICK, BACKUP)
RETENTION_TICK_SECONDS = 60  # cron's resolution


def enqueue_reconcile(queue: Queue, delay: timedelta | None = None) -> Job:
    """Queue a reconciliation pass; one per time slot however many processes ask."""
    import time

    seconds = int(delay.total_seconds()) if delay else 0
    slot = int((time.time() + seconds) // max(seconds, 1)) if seconds else int(time.time())
    options: dict[str, Any] = dict(job_id=f"tagwarden-reconcile-{slot}", job_timeout=300,
                                   result_ttl=600, failure_ttl=24 * 3600,
                                   retry=Retry(max=3, interval=[5, 30, 60]), meta=job_meta())
    if delay:
        return queue.enqueue_in(delay, RECONCILE, **options)
    return queue.enqueue(RECONCILE, **options)


def enqueue_drain(queue: Queue) -> Job:
    """Queue a drain of the registry-event inbox."""
    return queue.enqueue(DRAIN, job_timeout=600, result_ttl=60, failure_ttl=24 * 3600,
                         retry=Retry(max=5, interval=[1, 5, 15, 60, 120]), meta=job_meta())


def delivery_intervals(base: int, attempts: int = 5) -> list[int]:
    """Exponential backoff between delivery attempts: base, 3x, 9x, ..."""
    return [base * 3**i for i in range(attempts - 1)]


def enqueue_delivery(queue: Queue, delivery_id: str, base: int, timeout: int) -> Job:
    """Queue one outgoing webhook delivery with exponential backoff (5 attempts)."""
    return queue.enqueue(DELIVER, delivery_id, job_timeout=timeout * 3 + 10,
                         result_ttl=3600, failure_ttl=7 * 24 * 3600,
                         retry=Retry(max=4, interval=delivery_intervals(base)), meta=job_meta())


def enqueue_scan(queue: Queue, scan_id: str, timeout: int) -> Job:
    """Queue one scan; retried with backoff when the registry or Redis hiccups."""
    return queue.enqueue(SCAN, scan_id, job_id=f"scan-{scan_id}", job_timeout=timeout,
                         result_ttl=3600, failure_ttl=7 * 24 * 3600,
                         retry=Retry(max=3, interval=[5, 30, 120]), meta=job_meta())


def enqueue_retention(queue: Queue, run_id: str) -> Job:
    """Queue one retention run (its record is written first); a retry re-plans from scratch,
    so deletions already done are not repeated."""
    return queue.enqueue(RETENTION, run_id, job_id=f"retention-{run_id}", job_timeout=3600,
                         result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
                         retry=Retry(max=2, interval=[30, 120]), meta=job_meta())


def enqueue_retention_tick(queue: Queue) -> Job:
    """Queue the next look at the retention schedules, at the next minute; one per minute
    however many processes ask (same job id)."""
    import time

    seconds = RETENTION_TICK_SECONDS
    slot = int((time.time() + seconds) // seconds)
    return queue.enqueue_in(timedelta(seconds=seconds), RETENTION_TICK,
                            job_id=f"tagwarden-retention-tick-{slot}", job_timeout=300,
                            result_ttl=600, failure_ttl=24 * 3600, meta=job_meta())


def enqueue_backup(queue: Queue, interval: int, now: bool = False) -> Job:
    """Queue the next scheduled backup (TAGWARDEN_BACKUP_DIR) at the next multiple of
    `interval` seconds (or at once with `now`); one per slot however many workers ask."""
    import time

    slot = int(time.time() // interval) + (0 if now else 1)
    options: dict[str, Any] = dict(job_id=f"tagwarden-backup-{slot}", job_timeout=6 * 3600,
                                   result_ttl=7 * 86400, failure_ttl=7 * 86400,
                                   retry=Retry(max=2, interval=[60, 300]), meta=job_meta())
    if now:
        return queue.enqueue(BACKUP, **options)
    job: Job = queue.enqueue_at(datetime.fromtimestamp(slot * interval, UTC), BACKUP, **options)
    return job
