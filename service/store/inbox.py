"""The registry-event inbox: dedupe + append in one round trip, drained by a consumer group."""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key

DEDUPE_TTL = 7 * 24 * 3600
INBOX_MAXLEN = 1_000_000
GROUP = "processors"
# KEYS: 1 seen-marker, 2 inbox stream. ARGV: 1 event json, 2 ttl, 3 maxlen
ACCEPT = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[1])
  return 1
end
return 0
"""


class Inbox:
    """Registry events waiting to be processed (at-least-once, each id once)."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._accept = client.register_script(ACCEPT)
        self.stream = key("inbox")

    def accept(self, events: list[dict[str, Any]]) -> int:
        """Append the events not seen before; returns how many were new."""
        pipe = self.r.pipeline(transaction=False)
        for event in events:
            self._accept(keys=[key("event-seen", event["id"]), self.stream],
                         args=[json.dumps(event, separators=(",", ":")), DEDUPE_TTL,
                               INBOX_MAXLEN], client=pipe)
        return sum(int(x) for x in pipe.execute())

    def kick(self) -> bool:
        """True when no drain is scheduled yet (the caller then enqueues one)."""
        return bool(self.r.set(key("inbox", "draining"), "1", nx=True, ex=30))

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
            fresh = self.r.xreadgroup(GROUP, consumer, {self.stream: ">"},
                                      count=count - len(entries))
            for _, items in fresh or []:
                entries.extend(items)
        return [(entry_id, json.loads(fields["d"])) for entry_id, fields in entries if fields]

    def ack(self, entry_ids: list[str]) -> None:
        """Mark entries processed and drop them from the stream."""
        if entry_ids:
            pipe = self.r.pipeline(transaction=True)
            pipe.xack(self.stream, GROUP, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)
            pipe.execute()

    def backlog(self) -> int:
        """Entries not yet processed."""
        return int(self.r.xlen(self.stream))
