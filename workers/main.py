"""Entry point of an RQ worker process for Tagwarden's queue."""

from __future__ import annotations

import logging
import os

from redis.exceptions import RedisError
from rq import Queue, Worker

from service.jobs import enqueue_reconcile
from service.store import connect


def run_worker(burst: bool = False) -> bool:
    """Work Tagwarden's queue until stopped (or until empty with burst)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = os.environ.get("TAGWARDEN_REDIS_URL", "redis://127.0.0.1:6379/0")
    queue_name = os.environ.get("TAGWARDEN_QUEUE", "tagwarden")
    connection = connect(url, decode=False, timeout=30.0)
    queue = Queue(queue_name, connection=connection)
    worker = Worker([queue], connection=connection)
    try:
        enqueue_reconcile(queue)  # finish whatever a crash left behind, at every start
    except RedisError:
        logging.getLogger("tagwarden.worker").warning("redis not reachable at start")
    return worker.work(burst=burst, with_scheduler=True)
