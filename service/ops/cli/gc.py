"""`tagwarden gc`: the registry's garbage collection after retention deleted manifests."""

from __future__ import annotations

import sys

import click

from service.ops.cli.common import CONTEXT, print_json


@click.command("gc", context_settings=CONTEXT,
               short_help="run the registry's garbage collection (registry stopped or "
                          "read-only!) and report the bytes reclaimed on disk")
@click.option("--config", required=True, help="the registry's config.yml")
@click.option("--registry-binary", default="docker-registry", show_default=True,
              help="the distribution binary (`registry` in the registry:2 image)")
@click.option("--dry-run", is_flag=True, help="only list what would be removed")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def gc(config: str, registry_binary: str, dry_run: bool, as_json: bool) -> int:
    """Run the registry's garbage collection; print the bytes it reclaimed on disk."""
    from pathlib import Path

    from service.core.gc import GCError, collect

    try:
        result = collect(Path(config), registry_binary, dry_run)
    except GCError as exc:
        print(f"tagwarden gc: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print_json(result)
    else:
        print(f"reclaimed {result['bytes_reclaimed']} bytes in {result['storage']} "
              f"({result['bytes_before']} -> {result['bytes_after']}"
              f"{', dry run' if result['dry_run'] else ''})")
    return 0
