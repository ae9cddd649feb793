"""The registry-event inbox: dedupe + append in one round trip, drained by a consumer group."""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key
from service.store.events import EventStore, serialize

DEDUPE_TTL = 7 * 24 * 3600
INBOX_MAXLEN = 1_000_000
GROUP = "processors"
# One round trip per envelope. KEYS: 1 inbox stream, 2 draining flag, then per event its
# seen-marker followed (for events recorded directly) by its event streams.
# ARGV: 1 dedupe ttl, 2 maxlen, then per event: number of direct streams, event json.
# Returns {accepted, schedule a drain?, {1 or 0 per event: new or a duplicate}}.
ACCEPT = """
local accepted, queued, k = 0, 0, 3
local new = {}
for i = 3, #ARGV, 2 do
  local direct = tonumber(ARGV[i])
  new[#new + 1] = 0
  if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ARGV[1]) then
    accepted = accepted + 1
    new[#new] = 1
    if direct == 0 then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i + 1])
      queued = queued + 1
    else
      for j = 1, direct do
        redis.call('XADD', KEYS[k + j], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[i + 1])
      end
    end
  end
  k = k + 1 + direct
end
local kick = 0
if queued > 0 and redis.call('SET', KEYS[2], '1', 'NX', 'EX', 30) then kick = 1 end
return {accepted, kick, new}
"""


class Inbox:
    """Registry events waiting to be processed (at-least-once, each id once)."""

    def __init__(self, client: redis.Redis, max_len: int = INBOX_MAXLEN) -> None:
        self.r = client
        self.max_len = max_len  # inbox and event streams, approximate
        self._accept = client.register_script(ACCEPT)
        self.stream = key("inbox")

    def accept(self, events: list[dict[str, Any]], direct: Any = None) -> tuple[int, bool]:
        """Dedupe and store events in one round trip: (new events, schedule a drain?).
        `direct(event)` names the event streams of an event recorded right away (a pull
        needs no processing), or None to queue it for the workers."""
        keys = [self.stream, key("inbox", "draining")]
        args: list[int | str] = [DEDUPE_TTL, self.max_len]
        for event in events:
            streams = (direct(event) if direct else None) or []
            keys += [key("event-seen", event["id"]), *streams]
            args += [len(streams), serialize(event)]
        accepted, kick = self._accept(keys=keys, args=args)[:2]
        return int(accepted), bool(kick)

    def accept_envelopes(self, envelopes: list[list[dict[str, Any]]], direct: Any = None
                         ) -> tuple[list[int], bool]:
        """`accept` for several envelopes in one round trip: (new events of each envelope,
        schedule a drain?)."""
        keys = [self.stream, key("inbox", "draining")]
        args: list[int | str] = [DEDUPE_TTL, self.max_len]
        for event in (e for events in envelopes for e in events):
            streams = (direct(event) if direct else None) or []
            keys += [key("event-seen", event["id"]), *streams]
            args += [len(streams), serialize(event)]
        _, kick, new = self._accept(keys=keys, args=args)
        counts, at = [], 0
        for events in envelopes:
            counts.append(sum(int(flag) for flag in new[at:at + len(events)]))
            at += len(events)
        return counts, bool(kick)

    def done_draining(self) -> None:
        """The drain is ending: the next accepted event schedules a new one."""
        self.r.delete(key("inbox", "draining"))

    def _group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int = 200) -> list[tuple[str, dict[str, Any]]]:
        """New entries for this consumer, plus entries a dead consumer left for 60 s."""
        self._group()
        claimed = self.r.xautoclaim(self.stream, GROUP, consumer, min_idle_time=60_000,
                                    start_id="0-0", count=count)
        entries = list(claimed[1]) if claimed else []
        if len(entries) < count:
            entries.extend(self._fresh(consumer, count - len(entries)))
        return self._decode(entries)

    def wait(self, consumer: str, block_ms: int, count: int = 200
             ) -> list[tuple[str, dict[str, Any]]]:
        """New entries, waiting up to `block_ms` for the first to arrive."""
        return self._decode(self._fresh(consumer, count, block_ms))

    def _fresh(self, consumer: str, count: int, block_ms: int | None = None) -> list[Any]:
        fresh = self.r.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count,
                                  block=block_ms)
        return [entry for _, items in fresh or [] for entry in items]

    @staticmethod
    def _decode(entries: list[Any]) -> list[tuple[str, dict[str, Any]]]:
        return [(entry_id, json.loads(fields["d"])) for entry_id, fields in entries if fields]

    def finish(self, entry_id: str, event: dict[str, Any], events: EventStore) -> None:
        """Record a processed entry's event and drop the entry, in one transaction: an entry
        a killed worker left pending has no record yet, so its redelivery records it once."""
        pipe = self.r.pipeline(transaction=True)
        events.record(event, pipe)
        pipe.xack(self.stream, GROUP, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.execute()

    def backlog(self) -> int:
        """Entries not yet processed."""
        return int(self.r.xlen(self.stream))
