"""`tagwarden history` and `tagwarden status`: what was promoted, and what ran where."""

from __future__ import annotations

import sys
from typing import Any

import click

from service.ops.cli.common import (
    CONTEXT,
    POSITIVE_INT,
    Api,
    api_options,
    call,
    client_for,
    one_line,
    print_json,
    print_page,
    short,
    source_text,
    table,
)


@click.command(
    "history", context_settings=CONTEXT, short_help="promotion history, newest first",
    help="Promotions and rollbacks, newest first (GET /api/v1/promotions).")
@click.option("--repository", required=True, metavar="REPO")
@click.option("--env", metavar="ENV", help="only this environment")
@click.option("--limit", type=POSITIVE_INT, default=50, metavar="N",
              help="records per page (default: 50, max 500)")
@click.option("--all", "every_page", is_flag=True, help="follow next_cursor to the end")
@api_options()
def history(api: Api, repository: str, env: str | None, limit: int, every_page: bool) -> int:
    """GET /api/v1/promotions (every page with --all)."""
    client = client_for(api)

    def fetch() -> dict[str, Any]:
        if not every_page:
            return client.promotions(repository, env, limit)  # type: ignore[no-any-return]
        items: list[dict[str, Any]] = []
        for page in client.iter_promotions(repository, env, limit):
            items += page.get("items") or []
        return {"items": items, "next_cursor": None}

    where = f" in {env}" if env else ""
    return print_page(
        api, fetch, ["TIME", "ENV", "KIND", "DIGEST", "SOURCE", "ACTOR", "REASON"],
        lambda r: [r.get("created_at") or "-", r.get("environment") or "-",
                   r.get("kind") or "-", short(r.get("digest")), source_text(r.get("source")),
                   one_line(r.get("actor")), one_line(r.get("reason"))],
        f"no promotions of {repository}{where}", f"(more: --all, or --limit above {limit})")


@click.command(
    "status", context_settings=CONTEXT, short_help="what each environment points to",
    help="Each environment's digest, promotion time and tags, now or at a time (GET "
         "/api/v1/environments).")
@click.option("--repository", required=True, metavar="REPO")
@click.option("--at", metavar="RFC3339",
              help="as it was at this time (e.g. 2026-11-24T03:12:00Z; without a zone: UTC)")
@api_options()
def status(api: Api, repository: str, at: str | None) -> int:
    """GET /api/v1/environments."""
    moment = at
    if at is not None:
        moment = utc_time(at)
        if moment is None:
            print(f"error: --at {at!r} is not a time: use RFC 3339, e.g. "
                  "2026-11-24T03:12:00Z (a time without a zone is read as UTC)", file=sys.stderr)
            return 1
    client = client_for(api)
    state, failed = call(api, lambda: client.environments(repository, moment))
    if failed is not None:
        return failed
    if api.json:
        print_json(state)
        return 0
    print(f"{state.get('repository', repository)} at {state.get('at') or 'now'}")
    rows = [[e.get("name") or "-", e.get("digest") or "-", e.get("promoted_at") or "-",
             ", ".join(e.get("tags") or []) or "-"] for e in state.get("environments") or []]
    print(table(["ENV", "DIGEST", "PROMOTED_AT", "TAGS"], rows))
    return 0


def utc_time(text: str) -> str | None:
    """An RFC 3339 time for the API; a time without a zone is read as UTC (None: no time)."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
