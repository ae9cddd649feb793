"""Promotion state: pointers, history streams, records, intents, locks and idempotency keys.

The registry write and the Redis write cannot share a transaction, so a promotion writes an
*intent* before touching the registry and commits history + pointer + idempotent answer in
one Lua script afterwards; reconciliation finishes or drops intents left behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from service.domain.errors import Conflict, IdempotencyMismatch
from service.store import check_replicated, durable, key, scans, script_then, tagmap
from service.store.pagination import Visible, both, page

log = logging.getLogger("tagwarden.store.promotions")
IDEMPOTENCY_TTL = 24 * 3600
# A request still "running" after the lease is presumed dead (its process was killed): a retry
# then runs, finds the dead request's intent under the lock and completes it instead.
IDEMPOTENCY_LEASE = 30
# A lock outlives a holder that died (or a Redis restart) by at most this long. The pointer
# move itself is a compare-and-swap, so a holder slower than this cannot corrupt state.
LOCK_TIMEOUT = 10.0

# KEYS: 1 pointers hash, 2 env stream, 3 repo stream, 4 global stream, 5 record,
#       6 intent, 7 idempotency key, 8 reached hash, 9 repositories set, 10 tag map,
#       11 intents set, 12 environment lock
# ARGV: 1 env, 2 expected current digest ("" = none), 3 record json, 4 pointer json,
#       5 created ms, 6 idempotent answer json ("" = none), 7 digest, 8 created_at, 9 repo,
#       10 "1" when the environment tag was written (record it in the tag map),
#       11 intents member, 12 lock token ("" = the caller releases the lock itself)
# The lock is released in the same round trip, whether the pointer moved or not.
COMMIT = """
local released = 0
if ARGV[12] ~= '' and redis.call('GET', KEYS[12]) == ARGV[12] then
  released = redis.call('DEL', KEYS[12])
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local curdigest = ''
if cur then curdigest = cjson.decode(cur)['digest'] end
if curdigest ~= ARGV[2] then
  return {0, curdigest, released}
end
local ms = tonumber(ARGV[5])
local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #top > 0 then
  local t = tonumber(string.match(top[1][1], '^(%d+)'))
  if t > ms then ms = t end
end
local sid = redis.call('XADD', KEYS[2], ms .. '-*', 'd', ARGV[3])
redis.call('XADD', KEYS[3], '*', 'd', ARGV[3])
redis.call('XADD', KEYS[4], '*', 'd', ARGV[3])
redis.call('SET', KEYS[5], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSETNX', KEYS[8], ARGV[1] .. '|' .. ARGV[7], ARGV[8])
redis.call('DEL', KEYS[6])
redis.call('SADD', KEYS[9], ARGV[9])
redis.call('SREM', KEYS[11], ARGV[11])
if ARGV[10] == '1' then
  redis.call('HSET', KEYS[10], ARGV[1], ARGV[7])
end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[7], ARGV[6], 'EX', TTL)
end
return {1, sid, released}
""".replace("TTL", str(IDEMPOTENCY_TTL))


# KEYS: 1 intent, 2 intents set; ARGV: 1 intent json, 2 intents member
WRITE_INTENT = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class GateInputs:
    """The Redis side of a promotion's gates, read together."""

    reached: dict[str, str]  # {environment: first time the digest reached it}
    tags: dict[str, str]  # the repository's tag map (tag -> digest)
    tags_complete: bool  # the tag map was compared with the registry's tag list recently
    scan_id: str | None  # the digest's latest succeeded scan
    newest_scan_id: str | None = None  # the digest's most recently requested scan


class PromotionStore:
    """Everything about promotions that lives in Redis."""

    def __init__(self, client: redis.Redis, min_replicas: int = 0, wait_ms: int = 250) -> None:
        self.r = client
        self._commit = client.register_script(COMMIT)
        self._write_intent = client.register_script(WRITE_INTENT)
        # an intent and a commit are answered only once this many replicas hold them
        self.min_replicas = min_replicas
        self.wait_ms = wait_ms

    def _durable(self, pipe: Any) -> None:
        durable(pipe, self.min_replicas, self.wait_ms)

    # -- locks and intents -----------------------------------------------------------------
    def lock(self, repository: str, environment: str, wait: float = 8.0) -> redis.lock.Lock:
        """The (repository, environment) lock; serialises promotions across processes."""
        return self.r.lock(key("lock", "env", repository, environment), timeout=LOCK_TIMEOUT,
                           blocking_timeout=wait)

    def write_intent(self, intent: dict[str, Any]) -> None:
        """Record what is about to be written to the registry (on the replicas too, with
        min_replicas: a failover must not forget an intent whose tag gets written)."""
        replies = script_then(
            self.r, self._write_intent,
            keys=[key("intent", intent["repository"], intent["environment"]), key("intents")],
            args=[json.dumps(intent), f"{intent['repository']}|{intent['environment']}"],
            then=self._durable)
        if self.min_replicas:
            check_replicated(replies[-1], self.min_replicas)

    def intent(self, repository: str, environment: str) -> dict[str, Any] | None:
        """The pending intent of an environment, if a promotion was cut short."""
        raw = self.r.get(key("intent", repository, environment))
        return json.loads(raw) if raw else None

    def drop_intent(self, repository: str, environment: str) -> None:
        """Forget an intent whose registry write never happened."""
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key("intent", repository, environment))
        pipe.srem(key("intents"), f"{repository}|{environment}")
        pipe.execute()

    def pending_intents(self) -> list[tuple[str, str]]:
        """(repository, environment) pairs with an intent outstanding."""
        out = []
        for member in self.r.smembers(key("intents")):
            repository, _, environment = member.rpartition("|")
            if self.r.exists(key("intent", repository, environment)):
                out.append((repository, environment))
            else:
                self.r.srem(key("intents"), member)
        return out

    def locked_state(self, repository: str, environment: str
                     ) -> tuple[dict[str, Any] | None, str | None]:
        """(pending intent, current digest) of an environment in one round trip; read under
        its lock, where neither can change any more."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(key("intent", repository, environment))
        pipe.hget(key("env", repository), environment)
        raw_intent, raw_pointer = pipe.execute()
        return (json.loads(raw_intent) if raw_intent else None,
                json.loads(raw_pointer)["digest"] if raw_pointer else None)

    def gate_inputs(self, repository: str, digest: str, environments: list[str]) -> GateInputs:
        """What the promotion gates read from Redis, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(tagmap.map_key(repository))
        pipe.exists(tagmap.complete_key(repository))
        pipe.get(key("scan-latest", digest))
        scans.read_newest(pipe, digest)  # for a gate without a succeeded scan
        if environments:
            pipe.hmget(key("reached", repository), [f"{e}|{digest}" for e in environments])
        tags, complete, scan_id, newest, *reached = pipe.execute()
        firsts = zip(environments, reached[0], strict=True) if reached else ()
        return GateInputs(reached={env: at for env, at in firsts if at}, tags=tags,
                          tags_complete=bool(complete), scan_id=scan_id,
                          newest_scan_id=scans.newest_id(newest))

    # -- the atomic commit -----------------------------------------------------------------
    def commit(self, record: dict[str, Any], expected: str | None, created_ms: int,
               idempotent: dict[str, Any] | None, *, written: bool = False,
               lock: redis.lock.Lock | None = None) -> str:
        """Append the record and move the pointer atomically; Conflict if the pointer moved.
        `written`: the environment tag was just written (the tag map records it); `lock`: the
        held environment lock, released by the same script (its token is cleared)."""
        repository, environment = record["repository"], record["environment"]
        pointer = {"digest": record["digest"], "promotion_id": record["id"],
                   "promoted_at": record["created_at"], "tags": record["tags"]}
        idem_key = idempotent["key"] if idempotent else "-"
        answer = json.dumps(idempotent["value"]) if idempotent else ""
        data = json.dumps(record, separators=(",", ":"), sort_keys=True)
        token = lock.local.token if lock is not None else None
        replies = script_then(
            self.r, self._commit,
            keys=[
                key("env", repository),
                key("history", "env", repository, environment),
                key("history", "repo", repository),
                key("history", "all"),
                key("promotion", record["id"]),
                key("intent", repository, environment),
                key("idem", idem_key),
                key("reached", repository),
                key("repositories"),
                tagmap.map_key(repository),
                key("intents"),
                lock.name if lock is not None else key("lock", "none"),
            ],
            args=[environment, expected or "", data, json.dumps(pointer), created_ms, answer,
                  record["digest"], record["created_at"], repository, "1" if written else "",
                  f"{repository}|{environment}", token or ""],
            then=self._durable,
        )
        ok, value, released = replies[0]
        if lock is not None and token is not None:
            lock.local.token = None  # released by the script, or expired and taken by another
            if not released:
                log.warning("lock on %s %s expired before release", repository, environment)
        if not ok:
            raise Conflict(f"environment {environment!r} of {repository} moved to "
                           f"{value or 'nothing'} meanwhile")
        if self.min_replicas:
            check_replicated(replies[-1], self.min_replicas)
        committed: str = value
        return committed

    def confirm(self, promotion_id: str) -> bool | None:
        """After an unclear commit: whether the record is in Redis (None: the intent is still
        pending, so nobody decided yet), its presence acknowledged by min_replicas."""
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(key("promotion", promotion_id))
        pipe.incr(key("durability-probe"))  # a write of this connection for WAIT to count
        durable(pipe, self.min_replicas, self.wait_ms)
        replies = pipe.execute()
        if self.min_replicas:
            check_replicated(replies[-1], self.min_replicas)
        return bool(replies[0])

    # -- reads -----------------------------------------------------------------------------
    def record(self, promotion_id: str) -> dict[str, Any] | None:
        """One promotion record."""
        raw = self.r.get(key("promotion", promotion_id))
        return json.loads(raw) if raw else None

    def history(self, repository: str | None, environment: str | None, limit: int,
                cursor: str | None, visible: Visible | None = None
                ) -> tuple[list[dict[str, Any]], str | None]:
        """Records newest first, of the repositories `visible` accepts when no repository is
        named; a page costs the same with ten records or a million."""
        if repository and environment:
            return page(self.r, key("history", "env", repository, environment), limit, cursor)
        if repository:
            return page(self.r, key("history", "repo", repository), limit, cursor)
        keep = (lambda r: r["environment"] == environment) if environment else None
        seen = (lambda r: visible(r.get("repository"))) if visible else None
        return page(self.r, key("history", "all"), limit, cursor, both(keep, seen))

    def at(self, repository: str, environment: str, at_ms: int) -> dict[str, Any] | None:
        """The record in force in an environment at a time (newest not after `at_ms`)."""
        if at_ms < 0:
            return None  # before 1970: nothing was promoted yet
        found = self.r.xrevrange(key("history", "env", repository, environment),
                                 max=str(at_ms), min="-", count=1)
        return json.loads(found[0][1]["d"]) if found else None

    def recent(self, repository: str, environment: str, count: int) -> list[dict[str, Any]]:
        """The newest `count` records of one environment."""
        found = self.r.xrevrange(key("history", "env", repository, environment), count=count)
        return [json.loads(fields["d"]) for _, fields in found]

    def distinct_digests(self, repository: str, environment: str, count: int,
                         page_size: int = 200, max_records: int = 100_000) -> list[str]:
        """Up to `count` distinct digests an environment pointed to, newest first (read page
        by page: many re-promotions of the same digest do not hide older ones)."""
        stream = key("history", "env", repository, environment)
        found: list[str] = []
        upper, read = "+", 0
        while len(found) < count and read < max_records:
            page_ = self.r.xrevrange(stream, max=upper, min="-", count=page_size)
            for _, fields in page_:
                digest = json.loads(fields["d"])["digest"]
                if digest not in found:
                    found.append(digest)
                    if len(found) == count:
                        break
            read += len(page_)
            if len(page_) < page_size:
                break
            upper = "(" + page_[-1][0]
        return found

    def reached(self, repository: str, digest: str, environments: list[str]) -> dict[str, str]:
        """{environment: first time the digest reached it} for the given environments."""
        if not environments:
            return {}
        values = self.r.hmget(key("reached", repository), [f"{e}|{digest}" for e in environments])
        return {env: v for env, v in zip(environments, values, strict=True) if v}

    def known(self, repository: str) -> bool:
        """Whether a repository ever had a promotion."""
        return bool(self.r.sismember(key("repositories"), repository))

    def repositories(self) -> list[str]:
        """Every repository that ever had a promotion."""
        return sorted(self.r.smembers(key("repositories")))

    # -- idempotency -----------------------------------------------------------------------
    def begin_idempotent(self, idem_key: str, fingerprint: str) -> dict[str, Any] | None:
        """Claim a key (None: go ahead) or return the first answer; 422/409 otherwise."""
        running = json.dumps({"state": "running", "fp": fingerprint})
        if self.r.set(key("idem", idem_key), running, nx=True, ex=IDEMPOTENCY_LEASE):
            return None
        raw = self.r.get(key("idem", idem_key))
        if raw is None:  # expired between the two calls: claim again
            return self.begin_idempotent(idem_key, fingerprint)
        stored: dict[str, Any] = json.loads(raw)
        if stored["fp"] != fingerprint:
            raise IdempotencyMismatch("Idempotency-Key was used with a different request body")
        if stored["state"] == "running":
            raise Conflict("a request with this Idempotency-Key is still in progress")
        return stored

    def release_idempotent(self, idem_key: str) -> None:
        """Free a key whose request failed (a retry may run it again)."""
        self.r.delete(key("idem", idem_key))
