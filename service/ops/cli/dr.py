"""`tagwarden backup`, `tagwarden restore` and `tagwarden timeline`: disaster recovery and
post-mortems through the API (TAGWARDEN_URL / TAGWARDEN_TOKEN, an admin token for the first
two)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from service.ops.cli.common import _api_options, _call, _client, _print_json, _short, _table

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


def cmd_backup(args: argparse.Namespace) -> int:
    """GET /api/v1/backup into --out (written beside it, renamed when complete)."""
    client = _client(args)
    out = Path(args.out)
    partial = out.with_name(out.name + ".partial")

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
        os.replace(partial, out)
        return size

    try:
        size, failed = _call(args, fetch)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if failed is not None:
        return failed
    print(f"backup written to {out} ({size} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """POST /api/v1/restore with FILE as the body (streamed)."""
    client = _client(args)
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path} is not a file", file=sys.stderr)
        return 1

    def send() -> dict[str, Any]:
        with path.open("rb") as body:
            resp = _request(client, "POST", "/api/v1/restore", data=body,
                            params={"mode": args.mode}, headers={"Content-Type": NDJSON})
        _raise_for(client, resp)
        return resp.json()

    done, failed = _call(args, send)
    if failed is not None:
        return failed
    if args.json:
        _print_json(done)
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted(done.get("restored", {}).items()))
    print(f"restored the backup of {done.get('backup_created_at')} ({done.get('mode')}): "
          f"{counts or 'nothing'}; reconciliation with the registry {done.get('reconciliation')}")
    return 0


def _timeline_items(args: argparse.Namespace, client: Any) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"repository": args.repository, "limit": 500}
    for name in ("since", "until"):
        if getattr(args, name):
            params[name] = getattr(args, name)
    if args.env:
        params["environment"] = args.env
    items: list[dict[str, Any]] = []
    while True:
        resp = _request(client, "GET", "/api/v1/timeline", params=params)
        _raise_for(client, resp)
        page = resp.json()
        items += page.get("items") or []
        if not page.get("next_cursor") or len(items) >= args.max_items:
            return items[:args.max_items]
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
            _short(item.get("digest")) if item.get("digest") else None,
            ", ".join(item.get("tags") or []), item.get("actor"), item.get("summary"))) + " |")
    return "\n".join(lines)


def cmd_timeline(args: argparse.Namespace) -> int:
    """GET /api/v1/timeline, every page, as a table, markdown or JSON."""
    client = _client(args)
    items, failed = _call(args, lambda: _timeline_items(args, client))
    if failed is not None:
        return failed
    if args.json or args.format == "json":
        _print_json({"items": items})
    elif args.format == "markdown":
        print(markdown(args.repository, items))
    elif not items:
        print("nothing happened in that window")
    else:
        print(_table(["AT", "KIND", "ENV", "DIGEST", "ACTOR", "SUMMARY"], [[
            i.get("at") or "-", i.get("kind") or "-", i.get("environment") or "-",
            _short(i.get("digest")), i.get("actor") or "-", _cell(i.get("summary"))]
            for i in items]))
    return 0


def add_dr_parsers(sub: Any) -> None:
    """backup, restore and timeline (each parser carries its handler)."""
    slow = _api_options(timeout=3600.0)
    backup = sub.add_parser(
        "backup", parents=[slow], help="download a backup of the governance state",
        description="Stream GET /api/v1/backup (admin token) into a file: a consistent "
                    "snapshot of policies, tokens (hashes only), promotion history, pointers, "
                    "bindings, approvals, verifications, subscriptions and the referrer index.")
    backup.set_defaults(handler=cmd_backup)
    backup.add_argument("--out", required=True, metavar="FILE", help="where to write it")
    restore = sub.add_parser(
        "restore", parents=[slow], help="load a backup into the store",
        description="Send FILE to POST /api/v1/restore (admin token). Refused (409) when the "
                    "store holds governance state, unless --mode replace. Afterwards the "
                    "workers compare every environment with the registry and record what "
                    "changed since the backup.",
        epilog="exit status: 0 restored, 1 refused or failed (nothing written on a bad file)")
    restore.set_defaults(handler=cmd_restore)
    restore.add_argument("file", metavar="FILE", help="a backup written by `tagwarden backup`")
    restore.add_argument("--mode", choices=("empty-only", "replace"), default="empty-only",
                         help="replace: clear the governance state first (default: only "
                              "into an empty store)")
    timeline = sub.add_parser(
        "timeline", parents=[_api_options()], help="what happened to a repository, in order",
        description="GET /api/v1/timeline: pushes, denied pushes, promotions, rollbacks, "
                    "hotfixes, drift, scans, approvals and verifications, oldest first; "
                    "--format markdown prints the table a post-mortem starts from.")
    timeline.set_defaults(handler=cmd_timeline)
    timeline.add_argument("--repository", required=True, metavar="REPO")
    timeline.add_argument("--env", metavar="ENV", help="this environment (and pushes, scans)")
    timeline.add_argument("--since", metavar="TIME", help="RFC 3339, e.g. 2026-11-30T22:00:00Z")
    timeline.add_argument("--until", metavar="TIME", help="RFC 3339")
    timeline.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    timeline.add_argument("--max-items", type=int, default=10_000, metavar="N")
