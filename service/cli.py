"""The `tagwarden` command: dev stack, worker, registry config and CI subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


def cmd_dev(_args: argparse.Namespace) -> int:
    """Run the whole stack on loopback (what `make run` calls)."""
    from service.stack import run

    return run()


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one RQ worker on Tagwarden's queue."""
    from workers.main import run_worker

    run_worker(burst=args.burst)
    return 0


def cmd_registry_config(args: argparse.Namespace) -> int:
    """Write the registry config (compose runs this once before the registry starts)."""
    from service.registry.config import render_registry_config

    token = os.environ.get("TAGWARDEN_WEBHOOK_TOKEN", "")
    secret = os.environ.get("REGISTRY_HTTP_SECRET", "")
    if not token or not secret:
        print("tagwarden registry-config: set TAGWARDEN_WEBHOOK_TOKEN and REGISTRY_HTTP_SECRET",
              file=sys.stderr)
        return 1
    text = render_registry_config(
        data_dir=args.data_dir, addr=args.addr, secret=secret,
        webhook_url=args.webhook_url, webhook_token=token,
    )
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags."""
    parser = argparse.ArgumentParser(prog="tagwarden", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run redis, registry, gateway and worker on loopback")
    worker = sub.add_parser("worker", help="run an RQ worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    reg = sub.add_parser("registry-config", help="render the registry's config.yml")
    reg.add_argument("--data-dir", default="/var/lib/registry")
    reg.add_argument("--addr", default="0.0.0.0:5000")
    reg.add_argument("--webhook-url", default="http://gateway:8080/api/v1/webhooks/registry")
    reg.add_argument("--out", default="-")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "dev": cmd_dev,
    "worker": cmd_worker,
    "registry-config": cmd_registry_config,
}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand."""
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
