"""Backups and restores of the governance state, as NDJSON streams (one object a line).

A backup is a consistent cut (service/store/backup.py says how) streamed page by page. A
restore reads its body twice: first every line is validated (marshmallow) and copied to a
spool file, the whole stream bounded in size, the footer's counts and every pointer checked
against the history before it; only then is anything written. A bad line, an unknown kind, a
truncated or oversized stream: a 4xx naming the line, and the store untouched.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from marshmallow import ValidationError

from service.domain.durations import format_time
from service.domain.errors import Conflict, InvalidRequest
from service.domain.schemas.backup import LINE_SCHEMAS, ORDER, VERSION
from service.domain.schemas.base import flatten_errors
from service.domain.schemas.policy import load_policy
from service.services import Services
from service.store.backup import BackupReader, Cut, RestoreWriter

log = logging.getLogger("tagwarden.backup")
MAX_LINE = 1024 * 1024  # one record; a policy or a promotion is a few KiB
SPOOL_CHUNK = 1024 * 1024


class PayloadTooLarge(InvalidRequest):
    """A restore stream over TAGWARDEN_RESTORE_MAX_BYTES."""


def _line(kind: str, **fields: Any) -> bytes:
    return (json.dumps({"kind": kind, **fields}, separators=(",", ":"), sort_keys=True)
            + "\n").encode()


def _pointer(record: dict[str, Any]) -> dict[str, Any]:
    """The pointer the promotion commit writes for a record."""
    return {"digest": record["digest"], "promotion_id": record["id"],
            "promoted_at": record["created_at"], "tags": record["tags"]}


def stream_backup(svc: Services) -> Iterator[bytes]:
    """The lines of a backup of everything governance state holds, as of now."""
    reader = BackupReader(svc.redis)
    cut = reader.cut()
    return _lines(reader, cut)


def _lines(reader: BackupReader, cut: Cut) -> Iterator[bytes]:
    counts: Counter[str] = Counter()
    created = format_time(datetime.fromtimestamp(cut.at_ms / 1000, UTC))
    yield _line("header", version=VERSION, created_at=created, cut=cut.last)
    for _, raw in sorted(cut.policies.items()):
        counts["policy"] += 1
        yield _line("policy", policy=json.loads(raw))
    for kind, table in (("token", cut.tokens), ("subscription", cut.subscriptions)):
        for _, raw in sorted(table.items()):
            counts[kind] += 1
            yield _line(kind, **{kind: json.loads(raw)})
    pointers: dict[tuple[str, str], dict[str, Any]] = {}
    for stream_id, record in reader.stream(cut, "history"):
        counts["promotion"] += 1
        pointers[(record["repository"], record["environment"])] = _pointer(record)
        yield _line("promotion", id=stream_id, record=record)
    for (repository, environment), pointer in sorted(pointers.items()):
        counts["pointer"] += 1
        yield _line("pointer", repository=repository, environment=environment, pointer=pointer)
    for repository, tag, binding in reader.bindings(cut):
        counts["binding"] += 1
        yield _line("binding", repository=repository, tag=tag, binding=binding)
    for stream_id, approval in reader.approvals(cut):
        counts["approval"] += 1
        yield _line("approval", id=stream_id, approval=approval)
    for stream_id, record in reader.stream(cut, "verifications"):
        counts["verification"] += 1
        yield _line("verification", id=stream_id, verification=record)
    for repository, digest, subject, descriptor in reader.referrers():
        counts["referrer"] += 1
        yield _line("referrer", repository=repository, digest=digest, subject=subject,
                    descriptor=descriptor)
    yield _line("footer", counts=dict(sorted(counts.items())))
    log.info("backup as of %s: %s", created, dict(counts))


def write_backup(svc: Services, path: Path) -> dict[str, int]:
    """A backup into a file (written beside it, renamed when complete); its size in bytes."""
    partial = path.with_name(path.name + ".partial")
    size = 0
    with partial.open("wb") as out:
        for chunk in stream_backup(svc):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(path)
    return {"bytes": size}


# -- restore --------------------------------------------------------------------------------
class _Validator:
    """Checks each line as it comes: its schema, the order of kinds, pointers against the
    history, and at the end the footer's counts."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last_kind = -1
        self.header: dict[str, Any] | None = None
        self.footer: dict[str, Any] | None = None
        self.history: dict[tuple[str, str], dict[str, Any]] = {}
        self.pointed: set[tuple[str, str]] = set()
        self.last_ids: dict[str, tuple[int, int]] = {}
        self.schemas = {kind: schema() for kind, schema in LINE_SCHEMAS.items()}

    def line(self, number: int, raw: bytes) -> dict[str, Any]:
        where = f"line {number}"
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise _bad(where, "not a JSON object") from None
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise _bad(where, "not a {\"kind\", ...} object")
        kind = data["kind"]
        if kind not in LINE_SCHEMAS:
            raise _bad(where, f"unknown kind {kind[:40]!r}")
        if self.footer is not None:
            raise _bad(where, "a line after the footer")
        if (self.header is None) != (kind == "header"):
            raise _bad(where, "the first line must be the header, and only the first")
        if ORDER[kind] < self.last_kind:
            raise _bad(where, f"a {kind} line after the {_kind_name(self.last_kind)} lines")
        self.last_kind = ORDER[kind]
        try:
            loaded: dict[str, Any] = self.schemas[kind].load(data)
        except ValidationError as exc:
            raise InvalidRequest(f"restore stream, {where}: invalid {kind}", errors={
                f"{where}.{k}": v for k, v in flatten_errors(exc.messages).items()}) from None
        getattr(self, f"_{kind}", lambda *_: None)(where, loaded)
        if kind not in ("header", "footer"):
            self.counts[kind] += 1
        return loaded

    def _header(self, where: str, data: dict[str, Any]) -> None:
        self.header = data

    def _policy(self, where: str, data: dict[str, Any]) -> None:
        try:
            load_policy(data["policy"])
        except InvalidRequest as exc:
            raise InvalidRequest(f"restore stream, {where}: invalid policy", errors={
                f"{where}.policy.{k}": v for k, v in (exc.errors or {}).items()}) from None

    def _ordered(self, where: str, stream: str, stream_id: str) -> None:
        ms, seq = (int(p) for p in stream_id.split("-"))
        if (ms, seq) <= self.last_ids.get(stream, (-1, -1)):
            raise _bad(where, f"{stream} ids must increase ({stream_id})")
        self.last_ids[stream] = (ms, seq)

    def _promotion(self, where: str, data: dict[str, Any]) -> None:
        self._ordered(where, "promotion", data["id"])
        record = data["record"]
        self.history[(record["repository"], record["environment"])] = _pointer(record)

    def _pointer(self, where: str, data: dict[str, Any]) -> None:
        target = (data["repository"], data["environment"])
        if self.history.get(target) != data["pointer"] or target in self.pointed:
            raise _bad(where, f"the pointer of {target[0]} {target[1]} is not the last "
                              "promotion of that environment in this backup")
        self.pointed.add(target)

    def _approval(self, where: str, data: dict[str, Any]) -> None:
        self._ordered(where, "approval", data["id"])

    def _verification(self, where: str, data: dict[str, Any]) -> None:
        self._ordered(where, "verification", data["id"])

    def _footer(self, where: str, data: dict[str, Any]) -> None:
        self.footer = data

    def finish(self) -> None:
        if self.header is None:
            raise _bad("the stream", "empty: no header")
        if self.footer is None:
            raise _bad("the stream", "truncated: no footer line")
        declared = {k: v for k, v in self.footer["counts"].items() if v}
        if declared != dict(self.counts):
            raise _bad("the footer", f"counts {declared} do not match the lines "
                                     f"{dict(self.counts)}")
        missing = set(self.history) - self.pointed
        if missing:
            repository, environment = sorted(missing)[0]
            raise _bad("the stream", f"no pointer line for {repository} {environment}")


def _kind_name(order: int) -> str:
    return next(kind for kind, i in ORDER.items() if i == order)


def _bad(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"restore stream, {where}: {why}", errors={where: [why]})


def _lines_of(body: IO[bytes], limit: int) -> Iterator[tuple[int, bytes]]:
    """(number, line) of a byte stream, each line bounded, the whole bounded by `limit`."""
    total, number = 0, 0
    while True:
        raw = body.readline(MAX_LINE + 1)
        if not raw:
            return
        total += len(raw)
        if total > limit:
            raise PayloadTooLarge(f"restore stream larger than {limit} bytes "
                                  "(TAGWARDEN_RESTORE_MAX_BYTES)")
        number += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            raise _bad(f"line {number}", f"longer than {MAX_LINE} bytes")
        if raw.strip():
            yield number, raw


def restore(svc: Services, body: IO[bytes], mode: str, actor: str | None) -> dict[str, Any]:
    """POST /restore: validate the whole stream into a spool file, then load it."""
    reader = BackupReader(svc.redis)
    if mode == "empty-only" and reader.holds_state():
        raise Conflict("the store already holds governance state; restore only into an empty "
                       "store, or pass ?mode=replace to clear it first")
    if isinstance(body, io.RawIOBase):  # werkzeug's stream: readline would read byte by byte
        body = io.BufferedReader(body, SPOOL_CHUNK)
    check = _Validator()
    spool_dir = svc.settings.restore_spool_dir or None
    with tempfile.TemporaryFile(dir=spool_dir) as spool:
        for number, raw in _lines_of(body, svc.settings.restore_max_bytes):
            check.line(number, raw)
            spool.write(raw if raw.endswith(b"\n") else raw + b"\n")
        check.finish()
        if mode == "empty-only" and reader.holds_state():  # written meanwhile
            raise Conflict("the store received governance state during the restore's upload")
        spool.seek(0)
        assert check.header is not None
        writer = RestoreWriter(svc.redis)
        if mode == "replace":
            writer.clear()
        _load(writer, spool)
        writer.finish({"restored_at": format_time(datetime.now(UTC)), "actor": actor,
                       "backup_created_at": check.header["created_at"]})
    log.warning("restored the backup of %s (%s): %s", check.header["created_at"], mode,
                dict(check.counts))
    from service.core.jobs import enqueue_reconcile

    enqueue_reconcile(svc.queue)
    return {"restored": dict(check.counts), "backup_created_at": check.header["created_at"],
            "mode": mode, "reconciliation": "queued"}


def _load(writer: RestoreWriter, spool: IO[bytes]) -> None:
    """Write the validated lines (the spool holds only those)."""
    for raw in spool:
        data = json.loads(raw)
        kind = data["kind"]
        if kind == "policy":
            writer.policy(data["policy"]["name"], data["policy"])
        elif kind == "token":
            writer.token(data["token"])
        elif kind == "subscription":
            writer.subscription(data["subscription"])
        elif kind == "promotion":
            writer.promotion(data["id"], data["record"])
        elif kind == "pointer":
            writer.pointer(data["repository"], data["environment"], data["pointer"])
        elif kind == "binding":
            writer.binding(data["repository"], data["tag"], data["binding"])
        elif kind == "approval":
            writer.approval(data["id"], data["approval"])
        elif kind == "verification":
            writer.verification(data["id"], data["verification"])
        elif kind == "referrer":
            writer.referrer(data["repository"], data["digest"], data["subject"],
                            data["descriptor"])


# -- scheduled backups ----------------------------------------------------------------------
BACKUP_PREFIX = "tagwarden-backup-"


def scheduled(svc: Services, directory: str, keep: int) -> dict[str, Any]:
    """One backup into `directory` (named by its time), then only the newest `keep` kept."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"{BACKUP_PREFIX}{stamp}.ndjson"
    written = write_backup(svc, path)
    backups = sorted(folder.glob(f"{BACKUP_PREFIX}*.ndjson"))
    removed = []
    for old in backups[:-keep] if keep else []:
        old.unlink(missing_ok=True)
        removed.append(old.name)
    for stale in folder.glob(f"{BACKUP_PREFIX}*.ndjson.partial"):
        if stale.name != path.name + ".partial":
            stale.unlink(missing_ok=True)  # a backup cut short by a crash
    log.info("scheduled backup %s (%s bytes), removed %s", path, written["bytes"], removed)
    return {"path": str(path), "bytes": written["bytes"], "removed": removed}
