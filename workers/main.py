"""Entry point of an RQ worker process for Tagwarden's queue."""

from __future__ import annotations

import logging
import os

from redis.exceptions import RedisError
from rq import Queue, Worker

from service.config import Settings
from service.core.jobs import enqueue_backup, enqueue_reconcile, enqueue_retention_tick
from service.obs import multiproc
from service.obs.logs import setup_logging
from service.store import connect


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
    worker = Worker([queue], connection=connection,
                    maintenance_interval=settings.worker_maintenance_interval,
                    job_monitoring_interval=settings.job_monitoring_interval,
                    worker_ttl=settings.worker_maintenance_interval + 15)
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
    return worker.work(burst=burst, with_scheduler=True)
