"""The `tagwarden` command: dev stack, worker, health checks, rendered configs and the CI
subcommands; each area's commands live in their own module of this package."""

from __future__ import annotations

import sys
from typing import Any

import click

from service.ops.cli.common import CI_SYSTEMS, CONTEXT, describe
from service.ops.cli.dr import backup, restore, timeline
from service.ops.cli.evidence import approve, verify
from service.ops.cli.gc import gc
from service.ops.cli.health import healthcheck
from service.ops.cli.history import history, status
from service.ops.cli.promote import promote, rollback
from service.ops.cli.render import nginx_config, openapi, registry_config
from service.ops.cli.run import dev, worker
from service.ops.cli.scans import scan, vulndb

__all__ = ["CI_SYSTEMS", "cli", "main"]


class TagwardenGroup(click.Group):
    """A group whose subcommands end in one line on stderr and exit 1 on an unexpected
    failure, never a traceback; a subcommand's return value is its exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the subcommand; an exception it raises becomes `tagwarden NAME: error: ...`."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
            print(f"tagwarden {ctx.invoked_subcommand}: error: {describe(exc)}",
                  file=sys.stderr)
            raise click.exceptions.Exit(1) from None


@click.group("tagwarden", cls=TagwardenGroup, context_settings=CONTEXT)
def cli() -> None:
    """The `tagwarden` command: dev stack, worker, registry config and CI subcommands."""


for command in (dev, worker, healthcheck, registry_config, nginx_config, promote, rollback,
                history, status, vulndb, scan, openapi, approve, verify, backup, restore,
                timeline, gc):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand and return its exit status: a failure is one line on stderr,
    exit 1 (2 for a usage error), never a traceback."""
    try:
        result = cli.main(args=argv, prog_name="tagwarden", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C
        return 130
    if isinstance(result, int):  # a subcommand's status, or Exit's code (--help: 0)
        return result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
