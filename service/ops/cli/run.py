"""`tagwarden dev` and `tagwarden worker`: the processes the CLI starts."""

from __future__ import annotations

import click

from service.ops.cli.common import CONTEXT


@click.command("dev", context_settings=CONTEXT,
               short_help="run redis, registry, gateway and worker on loopback")
@click.option("--ha", is_flag=True, help="Redis primary, replica and three sentinels, two "
              "workers (what `make run-ha` runs)")
def dev(ha: bool) -> int:
    """Run the whole stack on loopback (what `make run` and `make run-ha` call)."""
    from service.ops.stack import run

    return run(ha=ha)


@click.command("worker", context_settings=CONTEXT, short_help="run an RQ worker")
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
def worker(burst: bool) -> int:
    """Run one RQ worker on Tagwarden's queue."""
    from workers.main import run_worker

    run_worker(burst=burst)
    return 0
