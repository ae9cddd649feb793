"""`tagwarden backup`, `tagwarden restore` and `tagwarden timeline`: disaster recovery and
post-mortems through the API (TAGWARDEN_URL / TAGWARDEN_TOKEN, an admin token for the first
two)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from service.ops.cli.common import (
    CONTEXT,
    Api,
    api_options,
    call,
    client_for,
    print_json,
    short,
    table,
)

NDJSON = "application/x-ndjson"


def _raise_for(client: Any, resp: Any) -> None:
    from service.ops.client import ApiError

    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = {"code": f"http_{resp.status_code}", "message": resp.text[:300]}
        raise ApiError(resp.status_code, body if isinstance(body, dict) else {})


def _request(client: Any, method: str, path: str, **kwargs: Any) -> Any:
    import requests

    from service.ops.client import ApiConnectionError

    try:
        return client.session.request(method, f"{client.url}{path}", timeout=client.timeout,
                                      **kwargs)
    except requests.RequestException as exc:
        raise ApiConnectionError(client.url, type(exc).__name__) from None


@click.command(
    "backup", context_settings=CONTEXT, short_help="download a backup of the governance state",
    help="Stream GET /api/v1/backup (admin token) into a file: a consistent snapshot of "
         "policies, tokens (hashes only), promotion history, pointers, bindings, approvals, "
         "verifications, subscriptions and the referrer index.")
@click.option("--out", required=True, metavar="FILE", help="where to write it")
@api_options(timeout=3600.0)
def backup(api: Api, out: str) -> int:
    """GET /api/v1/backup into --out (written beside it, renamed when complete)."""
    client = client_for(api)
    target = Path(out)
    partial = target.with_name(target.name + ".partial")

    def fetch() -> int:
        size = 0
        with _request(client, "GET", "/api/v1/backup", stream=True) as resp:
            _raise_for(client, resp)
            with partial.open("wb") as handle:
                for chunk in resp.iter_content(1024 * 1024):
                    handle.write(chunk)
                    size += len(chunk)
        with partial.open("rb") as handle:  # a cut connection leaves no footer behind
            handle.seek(max(0, size - 4096))
            if b'"kind":"footer"' not in handle.read():
                raise ValueError("the backup stream ended before its footer (connection cut)")
        os.replace(partial, target)
        return size

    try:
        size, failed = call(api, fetch)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if failed is not None:
        return failed
    print(f"backup written to {target} ({size} bytes)")
    return 0


@click.command(
    "restore", context_settings=CONTEXT, short_help="load a backup into the store",
    help="Send FILE (a backup written by `tagwarden backup`) to POST /api/v1/restore (admin "
         "token). Refused (409) when the store holds governance state, unless --mode replace. "
         "Afterwards the workers compare every environment with the registry and record what "
         "changed since the backup.",
    epilog="exit status: 0 restored, 1 refused or failed (nothing written on a bad file)")
@click.argument("file", metavar="FILE")
@click.option("--mode", type=click.Choice(["empty-only", "replace"]), default="empty-only",
              help="replace: clear the governance state first (default: only into an empty "
                   "store)")
@api_options(timeout=3600.0)
def restore(api: Api, file: str, mode: str) -> int:
    """POST /api/v1/restore with FILE as the body (streamed)."""
    client = client_for(api)
    path = Path(file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 1

    def send() -> dict[str, Any]:
        with path.open("rb") as body:
            resp = _request(client, "POST", "/api/v1/restore", data=body,
                            params={"mode": mode}, headers={"Content-Type": NDJSON})
        _raise_for(client, resp)
        return resp.json()  # type: ignore[no-any-return]

    done, failed = call(api, send)
    if failed is not None:
        return failed
    if api.json:
        print_json(done)
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted(done.get("restored", {}).items()))
    print(f"restored the backup of {done.get('backup_created_at')} ({done.get('mode')}): "
          f"{counts or 'nothing'}; reconciliation with the registry {done.get('reconciliation')}")
    return 0


def _timeline_items(client: Any, params: dict[str, Any], max_items: int
                    ) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        resp = _request(client, "GET", "/api/v1/timeline", params=params)
        _raise_for(client, resp)
        page = resp.json()
        items += page.get("items") or []
        if not page.get("next_cursor") or len(items) >= max_items:
            return items[:max_items]
        params["cursor"] = page["next_cursor"]


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") if text not in (None, "") else "-"


def markdown(repository: str, items: list[dict[str, Any]]) -> str:
    """The post-mortem table: one row per item, oldest first."""
    lines = [f"## Timeline of {repository}", "",
             "| time (UTC) | what | environment | digest | tags | actor | details |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for item in items:
        lines.append("| " + " | ".join(_cell(v) for v in (
            item.get("at"), item.get("kind"), item.get("environment"),
            short(item.get("digest")) if item.get("digest") else None,
            ", ".join(item.get("tags") or []), item.get("actor"), item.get("summary"))) + " |")
    return "\n".join(lines)


@click.command(
    "timeline", context_settings=CONTEXT, short_help="what happened to a repository, in order",
    help="GET /api/v1/timeline: pushes, denied pushes, promotions, rollbacks, hotfixes, drift, "
         "scans, approvals and verifications, oldest first; --format markdown prints the "
         "table a post-mortem starts from.")
@click.option("--repository", required=True, metavar="REPO")
@click.option("--env", metavar="ENV", help="this environment (and pushes, scans)")
@click.option("--since", metavar="TIME", help="RFC 3339, e.g. 2026-11-30T22:00:00Z")
@click.option("--until", metavar="TIME", help="RFC 3339")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "json"]),
              default="table", show_default=True)
@click.option("--max-items", type=int, default=10_000, metavar="N", show_default=True)
@api_options()
def timeline(api: Api, repository: str, env: str | None, since: str | None, until: str | None,
             fmt: str, max_items: int) -> int:
    """GET /api/v1/timeline, every page, as a table, markdown or JSON."""
    client = client_for(api)
    params: dict[str, Any] = {"repository": repository, "limit": 500}
    for name, value in (("since", since), ("until", until), ("environment", env)):
        if value:
            params[name] = value
    items, failed = call(api, lambda: _timeline_items(client, params, max_items))
    if failed is not None:
        return failed
    if api.json or fmt == "json":
        print_json({"items": items})
    elif fmt == "markdown":
        print(markdown(repository, items))
    elif not items:
        print("nothing happened in that window")
    else:
        print(table(["AT", "KIND", "ENV", "DIGEST", "ACTOR", "SUMMARY"], [[
            i.get("at") or "-", i.get("kind") or "-", i.get("environment") or "-",
            short(i.get("digest")), i.get("actor") or "-", _cell(i.get("summary"))]
            for i in items]))
    return 0
