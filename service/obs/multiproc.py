"""Prometheus multiprocess mode for gunicorn and RQ worker processes.

prometheus_client picks its storage when it is first imported: with PROMETHEUS_MULTIPROC_DIR
set, every process writes its samples to mmap files there and /metrics adds them up. So the
directory must be chosen before any process imports prometheus_client; this module never
imports it at the top (gunicorn's master imports this module from gunicorn.conf.py hooks).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

ENV = "PROMETHEUS_MULTIPROC_DIR"
OWNED = "TAGWARDEN_METRICS_DIR_OWNED"  # set when we created the directory (so we remove it)
log = logging.getLogger("tagwarden.metrics")


def enabled() -> bool:
    """Whether this process runs in multiprocess mode."""
    return bool(os.environ.get(ENV))


def prepare_dir() -> str:
    """Use PROMETHEUS_MULTIPROC_DIR if set (created if missing), else a fresh temporary one;
    call in gunicorn's master (`on_starting`) before any worker starts."""
    if "prometheus_client" in sys.modules:
        log.warning("prometheus_client imported before %s was set: metrics of the workers "
                    "may not be added up", ENV)
    path = os.environ.get(ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        return path
    path = tempfile.mkdtemp(prefix="tagwarden-metrics-")
    os.environ[ENV] = path
    os.environ[OWNED] = path
    return path


def ensure_dir() -> None:
    """Create PROMETHEUS_MULTIPROC_DIR if it is set but missing (a process started without
    gunicorn's hooks); without it the first metric would fail to open its file."""
    path = os.environ.get(ENV)
    if path:
        os.makedirs(path, exist_ok=True)


def mark_dead(pid: int) -> None:
    """Forget a dead worker's live gauges (gunicorn `child_exit`); its counters stay."""
    if not enabled():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def cleanup_dir() -> None:
    """Remove the directory at exit if prepare_dir created it (gunicorn `on_exit`)."""
    path = os.environ.get(OWNED)
    if path and path == os.environ.get(ENV):
        shutil.rmtree(path, ignore_errors=True)


def setup_worker() -> None:
    """Multiprocess mode for an RQ worker; call first thing in the worker process.

    RQ forks a "work horse" for every job, and with the default file-per-pid naming every
    job would leave its own files behind, which /metrics reads on every scrape. The horses of
    one worker run one at a time, so they share one set of files named after the worker;
    the worker process itself keeps its own pid."""
    if not enabled():
        log.info("%s not set: metrics of jobs are not exported (set it to the gateway's "
                 "directory to add them to its /metrics)", ENV)
        return
    os.makedirs(os.environ[ENV], exist_ok=True)
    if "service.obs.metrics" in sys.modules:
        log.warning("service.obs.metrics imported before setup_worker(): job metrics may be lost")
    from prometheus_client import values

    worker_pid = os.getpid()

    def identifier() -> str:
        pid = os.getpid()
        return str(pid) if pid == worker_pid else f"rqhorse-{worker_pid}"

    values.ValueClass = values.MultiProcessValue(identifier)
