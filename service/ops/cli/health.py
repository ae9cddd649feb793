"""`tagwarden healthcheck`: the container health checks of the gateway and of a worker (the
image's HEALTHCHECK and docker-compose.yml run it)."""

from __future__ import annotations

import os
import sys

import click

from service.ops.cli.common import CONTEXT, POSITIVE_FLOAT, describe

DEFAULT_BIND = "0.0.0.0:8080"
WILDCARDS = ("", "0.0.0.0", "::", "[::]", "*")
# a worker heartbeats at least every worker_ttl (maintenance interval + 15 s, workers/main.py)
# seconds; a heartbeat older than that plus this margin means a stuck worker
HEARTBEAT_MARGIN_SECONDS = 30


def healthz_url(bind: str) -> str:
    """Where the gateway bound to `bind` (TAGWARDEN_BIND) answers /healthz from this host."""
    host, _, port = bind.rpartition(":")
    if host in WILDCARDS:
        host = "127.0.0.1"
    return f"http://{host}:{port}/healthz"


def check_gateway(timeout: float) -> tuple[bool, str]:
    """(healthy, what was seen): /healthz of the local gateway answered 200."""
    import urllib.error
    import urllib.request

    url = healthz_url(os.environ.get("TAGWARDEN_BIND") or DEFAULT_BIND)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http only
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return False, f"gateway {url}: {describe(exc)}"
    return status == 200, f"gateway {url} answered {status}"


def check_worker(timeout: float) -> tuple[bool, str]:
    """(healthy, what was seen): an RQ worker of this host is registered on Tagwarden's queue
    with a recent heartbeat."""
    import socket
    from datetime import UTC, datetime

    from rq import Queue, Worker

    from service.config import Settings
    from service.store import connect

    settings = Settings.from_env()
    conn = connect(settings.redis_url, decode=False, timeout=timeout,
                   sentinels=settings.redis_sentinels, master=settings.redis_sentinel_master)
    host = socket.gethostname()
    try:
        mine = [w for w in Worker.all(queue=Queue(settings.queue_name, connection=conn))
                if w.hostname == host]
    finally:
        conn.close()
    if not mine:
        return False, f"no worker of {host} is registered on queue {settings.queue_name!r}"
    max_age = settings.worker_maintenance_interval + 15 + HEARTBEAT_MARGIN_SECONDS
    now = datetime.now(UTC)
    ages = []
    for w in mine:
        beat = w.last_heartbeat
        if beat is not None:
            ages.append((now - (beat if beat.tzinfo else beat.replace(tzinfo=UTC)))
                        .total_seconds())
    if not ages or min(ages) > max_age:
        return False, (f"the workers of {host} sent no heartbeat for more than {max_age}s "
                       f"({len(mine)} registered)")
    return True, f"worker of {host} on queue {settings.queue_name!r}: heartbeat " \
                 f"{max(0.0, min(ages)):.0f}s ago"


@click.command(
    "healthcheck", context_settings=CONTEXT,
    short_help="is the gateway (or, with --worker, this host's worker) alive?",
    help="Check the gateway listening on TAGWARDEN_BIND on this host (GET /healthz must answer "
         "200) or, with --worker, that an RQ worker of this host is registered on Tagwarden's "
         "queue in Redis with a recent heartbeat (TAGWARDEN_REDIS_URL, sentinels as the worker "
         "uses them). What the image's HEALTHCHECK and docker-compose.yml run.",
    epilog="exit status: 0 healthy, 1 unhealthy (one line says why)")
@click.option("--worker", "of_worker", is_flag=True,
              help="check this host's RQ worker instead of the gateway")
@click.option("--timeout", type=POSITIVE_FLOAT, default=4.0, metavar="SECONDS",
              show_default=True, help="give up on the gateway or Redis after this long")
def healthcheck(of_worker: bool, timeout: float) -> int:
    """Exit 0 when the gateway (or this host's worker) is alive, else 1."""
    try:
        healthy, seen = (check_worker if of_worker else check_gateway)(timeout)
    except Exception as exc:  # noqa: BLE001 - a health check says why in one line
        healthy, seen = False, describe(exc)
    if healthy:
        print(f"healthy: {seen}")
        return 0
    print(f"unhealthy: {seen}", file=sys.stderr)
    return 1
