"""Entry point of an RQ worker process for Tagwarden's queue."""

from __future__ import annotations

import logging
import os
import time

from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import StopRequested

from service.config import Settings
from service.core.jobs import enqueue_backup, enqueue_reconcile, enqueue_retention_tick
from service.obs import multiproc
from service.obs.logs import setup_logging
from service.store import connect

RESTART_PAUSE = 1.0  # seconds between a worker lost to Redis and the next one
SCHEDULER_RELEASE_WAIT = 60.0  # how long to wait for Redis to release a lost scheduler's lock


def load_vulndb() -> None:
    """Import TAGWARDEN_VULNDB when it changed since the last import (any worker may)."""
    path = os.environ.get("TAGWARDEN_VULNDB")
    if not path:
        return
    from service.core.vulndb_admin import import_vulndb
    from workers.context import services

    try:
        report = import_vulndb(services(), path, only_if_changed=True)
    except FileNotFoundError as exc:
        logging.getLogger("tagwarden.worker").error("TAGWARDEN_VULNDB: %s", exc)
        return
    if report:
        logging.getLogger("tagwarden.worker").info("vulndb imported: %s records",
                                                   report["records"])


def preload() -> None:
    """Import every job module and build the services once, in the worker process: RQ forks
    a work-horse per job, which then inherits them instead of paying ~300 ms each time."""
    import importlib

    from service.core.jobs import JOBS
    from workers.context import services

    for dotted in JOBS:
        importlib.import_module(dotted.rpartition(".")[0])
    services()


def run_worker(burst: bool = False) -> bool:
    """Work Tagwarden's queue until stopped (or until empty with burst)."""
    multiproc.setup_worker()  # before anything imports service.obs.metrics
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    setup_logging(settings.log_format)
    # through Sentinel when configured: the worker, its work-horses and its scheduler follow
    # a failover without a restart
    connection = connect(settings.redis_url, decode=False, timeout=30.0,
                         sentinels=settings.redis_sentinels,
                         master=settings.redis_sentinel_master)
    queue = Queue(settings.queue_name, connection=connection)
    # abandoned jobs (a worker killed mid-job) are found and retried within about
    # job_monitoring_interval + 60 s + maintenance_interval. An idle worker blocks on the
    # queue for worker_ttl - 15 s between maintenance checks (RQ's default ttl: 405 s), so
    # the ttl is tied to the maintenance interval; the same check restarts the scheduler
    # (retries, periodic reconciliation) when the worker that ran it died.
    log = logging.getLogger("tagwarden.worker")
    preload()
    try:
        enqueue_reconcile(queue)  # finish whatever a crash left behind, at every start
        enqueue_retention_tick(queue)  # retention schedules (ticks itself every minute)
        if settings.backup_dir:  # scheduled backups (queue themselves every interval)
            enqueue_backup(queue, settings.backup_interval)
        load_vulndb()
    except RedisError:
        log.warning("redis not reachable at start")
    while True:
        worker = None
        try:
            worker = Worker([queue], connection=connection,
                            maintenance_interval=settings.worker_maintenance_interval,
                            job_monitoring_interval=settings.job_monitoring_interval,
                            worker_ttl=settings.worker_maintenance_interval + 15)
            worked = worker.work(burst=burst, with_scheduler=True)
        except RedisError as exc:  # Redis away at the start, or in RQ's own teardown
            log.warning("worker ended on a Redis error (%s)", type(exc).__name__)
            worked = False
        if burst or (worker is not None and stop_requested(worker)):
            return worked
        # RQ gives up on any error while a job runs (a failover drops the connection
        # under the heartbeat): take a new worker in this process; the job it was running
        # is found abandoned and retried by the maintenance of whichever worker comes next
        log.warning("worker stopped on a lost Redis connection; starting a new one")
        try:
            time.sleep(RESTART_PAUSE)
            if worker is not None:
                release_scheduler_lock(worker, log)
        except StopRequested:  # SIGTERM meanwhile, through the lost worker's handler
            return worked


def stop_requested(worker: Worker) -> bool:
    """Did a signal ask this worker to stop (RQ marks an idle worker's warm shutdown only by
    its date, a busy one's by the flag)?"""
    return bool(worker._stop_requested or worker._shutdown_requested_date is not None)


def release_scheduler_lock(worker: Worker, log: logging.Logger) -> None:
    """Give up the scheduler lock a worker lost to Redis still holds (it was replicated to
    the new primary): left alone, no scheduler — delivery retries, timed reconciliation,
    retention ticks — runs until it expires a minute later. Waits for Redis to answer (a
    failover takes seconds); the lock script only deletes a lock this worker owns."""
    scheduler = worker.scheduler
    if scheduler is None or not scheduler.acquired_locks:
        return
    try:
        worker.stop_scheduler()
    except Exception:  # noqa: BLE001 - its process is gone or going; the lock is what matters
        pass
    deadline = time.monotonic() + SCHEDULER_RELEASE_WAIT
    while True:
        try:
            scheduler.release_locks()
            log.info("released the scheduler lock of the lost worker %s", worker.name)
            return
        except RedisError:
            if time.monotonic() > deadline:
                log.warning("could not release the lost worker's scheduler lock: it expires "
                            "by itself")
                return
            time.sleep(RESTART_PAUSE)
