"""Gunicorn settings for the gateway (`gunicorn -c gunicorn.conf.py 'service:create_app()'`)."""

import os

bind = os.environ.get("TAGWARDEN_BIND", "127.0.0.1:8080")
# gthread: a blob upload holds a thread, not the worker's heartbeat, so a slow 2 GiB push is
# never killed by --timeout (which for gthread only watches the worker's main loop).
worker_class = "service.http.gunicorn_worker.DeadlineThreadWorker"  # gthread + read deadlines
workers = int(os.environ.get("TAGWARDEN_WORKERS", "2"))
threads = int(os.environ.get("TAGWARDEN_THREADS", "32"))
timeout = 120
graceful_timeout = 30
keepalive = 75
# Docker and skopeo send large auth/header blocks at times; keep the defaults' safety limits.
limit_request_line = 8190
limit_request_field_size = 16384
accesslog = None  # the app logs one structured line per request itself
errorlog = "-"
loglevel = os.environ.get("TAGWARDEN_GUNICORN_LOGLEVEL", "warning")
proc_name = "tagwarden-gateway"


def on_starting(server):  # noqa: ARG001 - gunicorn hook signature
    """Validate TAGWARDEN_* settings once, before any worker starts; exit naming the variable."""
    import sys

    from service.obs import multiproc
    from service.config import ConfigError, Settings

    multiproc.prepare_dir()  # before any worker imports prometheus_client
    try:
        Settings.from_env()
    except ConfigError as exc:
        print(f"tagwarden: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def child_exit(server, worker):  # noqa: ARG001 - gunicorn hook signature
    """A worker died: drop its live gauges from the metrics directory (counters stay)."""
    from service.obs import multiproc

    multiproc.mark_dead(worker.pid)


def on_exit(server):  # noqa: ARG001 - gunicorn hook signature
    """Remove the metrics directory if on_starting created it."""
    from service.obs import multiproc

    multiproc.cleanup_dir()
