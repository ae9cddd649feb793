"""Entry point of an RQ worker process for Tagwarden's queue."""

from __future__ import annotations

import logging
import os

from redis.exceptions import RedisError
from rq import Queue, Worker

from service.jobs import enqueue_reconcile
from service.store import connect


def load_vulndb() -> None:
    """Import TAGWARDEN_VULNDB when it changed since the last import (any worker may)."""
    path = os.environ.get("TAGWARDEN_VULNDB")
    if not path:
        return
    from service.vulndb_admin import import_vulndb
    from workers.context import services

    try:
        report = import_vulndb(services(), path, only_if_changed=True)
    except FileNotFoundError as exc:
        logging.getLogger("tagwarden.worker").error("TAGWARDEN_VULNDB: %s", exc)
        return
    if report:
        logging.getLogger("tagwarden.worker").info("vulndb imported: %s records",
                                                   report["records"])


def run_worker(burst: bool = False) -> bool:
    """Work Tagwarden's queue until stopped (or until empty with burst)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = os.environ.get("TAGWARDEN_REDIS_URL", "redis://127.0.0.1:6379/0")
    queue_name = os.environ.get("TAGWARDEN_QUEUE", "tagwarden")
    connection = connect(url, decode=False, timeout=30.0)
    queue = Queue(queue_name, connection=connection)
    worker = Worker([queue], connection=connection)
    log = logging.getLogger("tagwarden.worker")
    try:
        enqueue_reconcile(queue)  # finish whatever a crash left behind, at every start
        load_vulndb()
    except RedisError:
        log.warning("redis not reachable at start")
    return worker.work(burst=burst, with_scheduler=True)
