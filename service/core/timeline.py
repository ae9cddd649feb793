"""A post-mortem timeline: pushes, denied pushes, promotions, rollbacks, hotfixes, drift,
scans, approvals and verifications of one repository, merged in one order, oldest first.
`at` is when Tagwarden recorded each (a promotion's commit, an event's arrival).

Each source is a Redis stream of the repository read forward from a position; a page takes up
to `limit` entries of each, merges them by stream time (then source order) and keeps the first
`limit`; the cursor holds every source's position, so no item is skipped or repeated.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any

from service.domain.durations import format_time
from service.domain.errors import InvalidRequest
from service.services import Services
from service.store.timeline import SOURCES, TimelineSources

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
EVENT_KINDS = {"push": "push", "push.denied": "push.denied", "drift.detected": "drift"}
FAR_FUTURE_MS = 2**63 - 1


def short(digest: str | None) -> str:
    """sha256:0123456789ab (12 hex) for summaries."""
    return digest[:19] if digest else "nothing"


def encode_cursor(positions: dict[str, str]) -> str:
    """Opaque cursor of every source's position (in SOURCES order, "" for not yet read)."""
    raw = ",".join(positions.get(source, "") for source in SOURCES).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, str]:
    """Positions inside a cursor; InvalidRequest when it is not one of ours."""
    try:
        parts = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()
                                         ).decode().split(",")
    except (ValueError, UnicodeDecodeError):
        parts = []
    if len(parts) != len(SOURCES) or not all(
            not p or (STREAM_ID.fullmatch(p) and all(int(n) < 2**64 for n in p.split("-")))
            for p in parts):
        raise InvalidRequest("invalid cursor", errors={"cursor": ["not a cursor from this API"]})
    return {source: p for source, p in zip(SOURCES, parts, strict=True) if p}


def _ms_of(stream_id: str) -> int:
    return int(stream_id.split("-", 1)[0])


def _at(stream_id: str) -> str:
    return format_time(datetime.fromtimestamp(_ms_of(stream_id) / 1000, UTC))


def _promotion(record: dict[str, Any]) -> dict[str, Any]:
    kind = record.get("kind") or "promotion"
    tags = record.get("tags") or []
    what = f"{short(record.get('digest'))}" + (f" ({', '.join(tags)})" if tags else "")
    verb = {"rollback": "rolled back to", "hotfix": "hotfix of",
            "reconciled": "found after a restore:"}.get(kind, "promoted")
    summary = f"{record.get('environment')}: {verb} {what}"
    if record.get("previous_digest"):
        summary += f", was {short(record['previous_digest'])}"
    if record.get("reverts"):
        summary += f"; reverts {record['reverts']}"
    if record.get("bypassed"):
        summary += f"; bypassed {', '.join(record['bypassed'])}"
    if record.get("reason"):
        summary += f"; reason: {record['reason']}"
    return {"at": record.get("created_at"), "kind": kind, "environment": record.get(
        "environment"), "digest": record.get("digest"), "tags": tags,
        "actor": record.get("actor"), "summary": summary, "ref": f"promotion:{record['id']}"}


def _event(event: dict[str, Any]) -> dict[str, Any] | None:
    kind = EVENT_KINDS.get(str(event.get("action")))
    if kind is None:
        return None
    if kind == "push":
        if not event.get("tag"):
            return None  # blob pushes and pushes by digest: the tagged push tells the story
        summary = f"pushed {event['tag']} as {short(event.get('digest'))}"
        tags = [event["tag"]]
    elif kind == "push.denied":
        rules = ", ".join(v.get("rule", "?") for v in event.get("violations") or [])
        summary = f"push of {event.get('tag') or event.get('digest') or '?'} denied ({rules})"
        tags = [event["tag"]] if event.get("tag") else []
    else:
        summary = (f"{event.get('tag')} found at {short(event.get('found_digest'))}, expected "
                   f"{short(event.get('expected_digest'))}"
                   + ("; restored" if event.get("restored") else "; not restored"))
        tags = []
    item = {"at": event.get("timestamp"), "kind": kind, "digest": event.get("digest") or
            event.get("found_digest"), "tags": tags, "actor": event.get("actor"),
            "summary": summary, "ref": f"event:{event.get('id')}"}
    if kind == "drift":
        item["environment"] = event.get("tag")
    return item


def _scan(scan: dict[str, Any]) -> dict[str, Any]:
    counts = scan.get("summary") or {}
    found = ", ".join(f"{k} {counts.get(k, 0)}" for k in ("critical", "high", "medium", "low")
                      ) if scan.get("status") == "succeeded" else scan.get("error") or ""
    return {"at": scan.get("created_at") or scan.get("started_at"), "kind": "scan",
            "digest": scan.get("digest"), "summary": f"scan {scan.get('status')}"
            + (f": {found}" if found else ""), "ref": f"scan:{scan.get('id')}"}


def _approval(approval: dict[str, Any]) -> dict[str, Any]:
    what = "hotfix approval" if approval.get("hotfix") else "approval"
    summary = f"{what} of {short(approval.get('digest'))} for {approval.get('environment')}"
    if approval.get("withdrawn_at"):
        summary += f" (withdrawn {approval['withdrawn_at']} by {approval.get('withdrawn_by')})"
    return {"at": approval.get("created_at"), "kind": "approval",
            "environment": approval.get("environment"), "digest": approval.get("digest"),
            "actor": approval.get("approver"), "summary": summary,
            "ref": f"approval:{approval.get('id')}"}


def _verification(record: dict[str, Any]) -> dict[str, Any]:
    return {"at": record.get("created_at"), "kind": "verification",
            "environment": record.get("environment"), "digest": record.get("digest"),
            "actor": record.get("recorded_by"),
            "summary": f"{record.get('name')} {record.get('result')} in "
                       f"{record.get('environment')}" + (f" ({record['url']})"
                                                         if record.get("url") else ""),
            "ref": f"verification:{record.get('id')}"}


SHAPES = {"promotions": _promotion, "events": _event, "scans": _scan, "approvals": _approval,
          "verifications": _verification}


def _item(source: str, stream_id: str, record: dict[str, Any], environment: str | None
          ) -> dict[str, Any] | None:
    if "_gone" in record:
        return None
    item = SHAPES[source](record)
    if item is None:
        return None
    if environment is not None and item.get("environment") not in (None, environment):
        return None  # another environment's (repository-wide items stay)
    # when Tagwarden recorded it: one clock for every source, so the order is the order of
    # the times shown (a registry event's own timestamp may run ahead of its delivery)
    item["at"] = _at(stream_id)
    return {k: v for k, v in item.items() if v is not None}


def _last(pending: list[tuple[int, int, str, str, dict[str, Any]]], source: str) -> str:
    return max((e for e in pending if e[2] == source), key=lambda e: (e[0], e[1]))[3]


def timeline(svc: Services, args: dict[str, Any]) -> dict[str, Any]:
    """GET /timeline: one page of the merged sources, oldest first."""
    repository, environment = args["repository"], args.get("environment")
    since = args.get("since")
    until = args.get("until")
    since_ms = int(since.timestamp() * 1000) if since else 0
    until_ms = int(until.timestamp() * 1000) if until else FAR_FUTURE_MS
    positions = decode_cursor(args["cursor"]) if args.get("cursor") else {}
    limit = args["limit"]
    reader = TimelineSources(svc.redis)
    pending: list[tuple[int, int, str, str, dict[str, Any]]] = []
    exhausted: set[str] = set()
    for order, source in enumerate(SOURCES):
        batch = reader.read(source, repository, positions.get(source), since_ms, until_ms,
                            limit)
        if len(batch) < limit:
            exhausted.add(source)
        for stream_id, record in batch:
            seq = int(stream_id.split("-", 1)[1])
            pending.append((_ms_of(stream_id), order * 2**40 + seq, source, stream_id, record))
    pending.sort(key=lambda entry: (entry[0], entry[1]))
    # a source that has more than it gave must not be overtaken: nothing later than its last
    # entry read is taken on this page (its next entries may come before it)
    horizon = min(((e[0], e[1]) for e in pending if e[2] not in exhausted
                   and e[3] == _last(pending, e[2])), default=None)
    items: list[dict[str, Any]] = []
    taken = 0
    for ms, rank, source, stream_id, record in pending:
        if len(items) == limit or (horizon is not None and (ms, rank) > horizon):
            break
        taken += 1
        positions[source] = stream_id
        item = _item(source, stream_id, record, environment)
        if item is not None:
            items.append(item)
    more = taken < len(pending) or len(exhausted) < len(SOURCES)
    return {"items": items, "next_cursor": encode_cursor(positions) if more else None}
