"""Backup and restore of the governance state: what is read, cut at one moment, and written.

Consistency. The governance state is of two sorts:
- append-only streams (promotion history, approvals, verifications): one MULTI at the start
  captures the last id of each, and the backup reads each stream up to that id only, however
  long it takes; what is derived from a stream (environment pointers, "first reached" times,
  the newest result of each check, the valid approvals) is rebuilt from the records read, so
  it is exactly as it was at that moment (the promotion commit writes record and pointer in
  one Lua script: a pointer is always the last record of its environment);
- small tables (policies, tokens, subscriptions) read whole in the same MULTI;
- bindings and the referrer index, read with SCAN after the cut: a binding made after the
  cut is left out by its `bound_at`; an approval withdrawn after the cut is written back as
  it was (its `withdrawn_at` says when). The referrer index is a cache of what the registry
  holds (it is rebuilt from pushes), any state of it is sound.
Nothing is copied whole: each part is read page by page while the caller streams it out.

Not backed up (rebuilt or short-lived): the tag map (a cache of the registry), scans and
their reports (30-day TTL; re-run), registry events, audit, deliveries, idempotency keys,
promotion intents (the restore's reconciliation compares every environment with the registry).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from service.store import key
from service.store.approvals import GRACE
from service.store.approvals import STREAM_MAXLEN as APPROVALS_MAXLEN
from service.store.approvals import _valid_key as approvals_valid_key
from service.store.bindings import bindings_key
from service.store.referrers import referrers_key, subjects_key

PAGE = 1000
# what "the store holds governance state" looks at first (then bindings and referrers)
MAIN_KEYS = ("policies", "tokens", "subscriptions", "repositories")
STREAMS = {"history": ("history", "all"), "approvals": ("approvals", "all"),
           "verifications": ("verifications", "all")}
# every key family a restore in `replace` mode clears before loading
FAMILIES = ("policies", "tokens", "token-hash:*", "subscriptions", "history:*", "promotion:*",
            "env:*", "reached:*", "repositories", "bindings:*", "approval:*", "approvals:*",
            "verifications:*", "referrer-subjects:*", "referrers:*", "intent:*", "intents",
            "restore:pending")


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Cut:
    """The moment a backup stands for: stream ids, small tables and the server's time."""

    at_ms: int
    last: dict[str, str | None]  # stream name -> last id at the cut (None: empty)
    policies: dict[str, str]
    tokens: dict[str, str]
    subscriptions: dict[str, str]


class BackupReader:
    """Reads the governance state as of a cut, page by page."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def cut(self) -> Cut:
        """One MULTI: the last id of each stream, the small tables and the time."""
        pipe = self.r.pipeline(transaction=True)
        for parts in STREAMS.values():
            pipe.xrevrange(key(*parts), count=1)
        pipe.hgetall(key("policies"))
        pipe.hgetall(key("tokens"))
        pipe.hgetall(key("subscriptions"))
        pipe.time()
        *tops, policies, tokens, subscriptions, now = pipe.execute()
        last = {name: (top[0][0] if top else None) for name, top in zip(STREAMS, tops,
                                                                         strict=True)}
        return Cut(at_ms=int(now[0]) * 1000 + int(now[1]) // 1000, last=last,
                   policies=policies, tokens=tokens, subscriptions=subscriptions)

    def stream(self, cut: Cut, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(stream id, entry) of one stream, oldest first, up to the cut."""
        upper = cut.last[name]
        if upper is None:
            return
        lower = "-"
        while True:
            batch = self.r.xrange(key(*STREAMS[name]), min=lower, max=upper, count=PAGE)
            for entry_id, fields in batch:
                yield entry_id, json.loads(fields["d"])
            if len(batch) < PAGE:
                return
            lower = f"({batch[-1][0]}"

    def approvals(self, cut: Cut) -> Iterator[tuple[str, dict[str, Any]]]:
        """(stream id, approval as it was at the cut), oldest first."""
        batch: list[tuple[str, dict[str, Any]]] = []
        for item in self.stream(cut, "approvals"):
            batch.append(item)
            if len(batch) == PAGE:
                yield from self._approval_records(cut, batch)
                batch = []
        yield from self._approval_records(cut, batch)

    def _approval_records(self, cut: Cut, refs: list[tuple[str, dict[str, Any]]]
                          ) -> Iterator[tuple[str, dict[str, Any]]]:
        if not refs:
            return
        raw = self.r.mget([key("approval", ref["id"]) for _, ref in refs])
        for (entry_id, _), value in zip(refs, raw, strict=True):
            if value is None:
                continue
            record = json.loads(value)
            withdrawn = record.get("withdrawn_at")
            if withdrawn and _ms(withdrawn) > cut.at_ms:  # withdrawn after the cut
                record.update(withdrawn_at=None, withdrawn_by=None)
            yield entry_id, record

    def _scan_hashes(self, family: str) -> Iterator[tuple[str, str, str]]:
        """(repository, field, value) of every hash `tw:<family>:<repository>`."""
        prefix = key(family, "")
        for name in self.r.scan_iter(match=f"{prefix}*", count=PAGE):
            repository = name[len(prefix):]
            for field, value in self.r.hscan_iter(name, count=PAGE):
                yield repository, field, value

    def bindings(self, cut: Cut) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(repository, tag, binding) of bindings made up to the cut's second."""
        for repository, tag, value in self._scan_hashes("bindings"):
            binding = json.loads(value)
            bound = binding.get("bound_at")
            if bound and _ms(bound) > cut.at_ms // 1000 * 1000:
                continue
            yield repository, tag, binding

    def referrers(self) -> Iterator[tuple[str, str, str | None, dict[str, Any] | None]]:
        """(repository, manifest digest, its subject or None, its descriptor or None)."""
        for repository, digest, subject in self._scan_hashes("referrer-subjects"):
            descriptor = None
            if subject:
                raw = self.r.hget(referrers_key(repository, subject), digest)
                descriptor = json.loads(raw) if raw else None
            yield repository, digest, subject or None, descriptor

    # -- what a restore checks first ------------------------------------------------------
    def holds_state(self) -> bool:
        """Whether any governance state is stored (the bootstrap admin token is not)."""
        pipe = self.r.pipeline(transaction=False)
        for name in MAIN_KEYS:
            pipe.exists(key(name))
        for parts in STREAMS.values():
            pipe.exists(key(*parts))
        if any(pipe.execute()):
            return True
        return any(True for family in ("bindings", "referrer-subjects")
                   for _ in self.r.scan_iter(match=f"{key(family, '')}*", count=PAGE))


class RestoreWriter:
    """Loads validated backup lines in pipelined batches, reproducing stream ids."""

    def __init__(self, client: redis.Redis, batch: int = 500) -> None:
        self.r = client
        self.batch = batch
        self.pipe = client.pipeline(transaction=False)
        self.queued = 0
        self.env_top: dict[tuple[str, str], int] = {}  # last ms of each environment stream
        self.now_ms = int(time.time() * 1000)

    def clear(self) -> int:
        """Delete every key of the governance families (mode `replace`); how many."""
        removed = 0
        for family in FAMILIES:
            names = list(self.r.scan_iter(match=key(family), count=PAGE)) if "*" in family \
                else [key(family)]
            for start in range(0, len(names), PAGE):
                removed += self.r.unlink(*names[start:start + PAGE])
        return removed

    def _tick(self, commands: int = 1) -> None:
        self.queued += commands
        if self.queued >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Send what is queued."""
        if self.queued:
            self.pipe.execute()
            self.queued = 0

    def policy(self, name: str, policy: dict[str, Any]) -> None:
        self.pipe.hset(key("policies"), name, json.dumps(policy))
        self._tick()

    def token(self, meta: dict[str, Any]) -> None:
        self.pipe.hset(key("tokens"), meta["id"], json.dumps(meta))
        self.pipe.set(key("token-hash", meta["hash"]), meta["id"])
        self._tick(2)

    def subscription(self, sub: dict[str, Any]) -> None:
        self.pipe.hset(key("subscriptions"), sub["id"], json.dumps(sub))
        self._tick()

    def promotion(self, stream_id: str, record: dict[str, Any]) -> None:
        """The three history streams (the global id kept, the others as the commit made
        them), the record, the first-reached time and the repository."""
        repository, environment = record["repository"], record["environment"]
        data = _dumps(record)
        created = _ms(record["created_at"])
        env_ms = max(created, self.env_top.get((repository, environment), 0))
        self.env_top[(repository, environment)] = env_ms
        stream_ms = stream_id.split("-", 1)[0]
        self.pipe.xadd(key("history", "all"), {"d": data}, id=stream_id)
        self.pipe.xadd(key("history", "repo", repository), {"d": data}, id=f"{stream_ms}-*")
        self.pipe.xadd(key("history", "env", repository, environment), {"d": data},
                       id=f"{env_ms}-*")
        self.pipe.set(key("promotion", record["id"]), data)
        self.pipe.hsetnx(key("reached", repository), f"{environment}|{record['digest']}",
                         record["created_at"])
        self.pipe.sadd(key("repositories"), repository)
        self._tick(6)

    def pointer(self, repository: str, environment: str, pointer: dict[str, Any]) -> None:
        ordered = {name: pointer[name] for name in ("digest", "promotion_id", "promoted_at",
                                                     "tags")}  # as the commit writes it
        self.pipe.hset(key("env", repository), environment, json.dumps(ordered))
        self._tick()

    def binding(self, repository: str, tag: str, binding: dict[str, Any]) -> None:
        self.pipe.hset(bindings_key(repository), tag, json.dumps(binding))
        self._tick()

    def approval(self, stream_id: str, approval: dict[str, Any]) -> None:
        """The record, its listing streams, and (still valid) the gate's set."""
        repository = approval["repository"]
        data = _dumps(approval)
        ref = json.dumps({"id": approval["id"]})
        stream_ms = stream_id.split("-", 1)[0]
        self.pipe.set(key("approval", approval["id"]), data)
        self.pipe.xadd(key("approvals", "all"), {"d": ref}, id=stream_id)
        self.pipe.xadd(key("approvals", "repo", repository), {"d": ref}, id=f"{stream_ms}-*",
                       maxlen=APPROVALS_MAXLEN, approximate=True)
        expires = _ms(approval["expires_at"])
        commands = 3
        if expires > self.now_ms:
            self.pipe.zadd(key("approvals", "pending", repository),
                           {approval["digest"]: expires}, gt=True)
            commands += 1
            if not approval.get("withdrawn_at"):
                valid = approvals_valid_key(repository, approval["environment"],
                                            approval["digest"], bool(approval.get("hotfix")))
                ttl = (expires - self.now_ms) // 1000 + GRACE
                self.pipe.hset(valid, approval["id"], data)
                self.pipe.expire(valid, ttl, nx=True)
                self.pipe.expire(valid, ttl, gt=True)
                commands += 3
        self._tick(commands)

    def verification(self, stream_id: str, record: dict[str, Any]) -> None:
        data = _dumps(record)
        stream_ms = stream_id.split("-", 1)[0]
        self.pipe.xadd(key("verifications", "all"), {"d": data}, id=stream_id)
        self.pipe.xadd(key("verifications", "repo", record["repository"]), {"d": data},
                       id=f"{stream_ms}-*")
        self.pipe.hset(key("verifications", "latest", record["repository"], record["digest"],
                           record["environment"]), record["name"], data)
        self._tick(3)

    def referrer(self, repository: str, digest: str, subject: str | None,
                 descriptor: dict[str, Any] | None) -> None:
        self.pipe.hset(subjects_key(repository), digest, subject or "")
        if subject and descriptor is not None:
            self.pipe.hset(referrers_key(repository, subject), digest, _dumps(descriptor))
        self._tick(2)

    def finish(self, pending: dict[str, Any]) -> None:
        """Send the rest; a new policy version (every process reloads its policy cache) and
        the mark that makes the next reconciliation adopt what the registry holds."""
        self.pipe.set(key("policies", "version"), str(self.now_ms))
        self.pipe.set(key("restore", "pending"), json.dumps(pending))
        self.queued += 2
        self.flush()


def restore_pending(client: redis.Redis) -> dict[str, Any] | None:
    """The mark a restore leaves for reconciliation (None: no restore to reconcile)."""
    raw = client.get(key("restore", "pending"))
    return json.loads(raw) if raw else None


def clear_restore_pending(client: redis.Redis) -> None:
    """Reconciliation adopted what the registry holds: drift repair may run again."""
    client.delete(key("restore", "pending"))
