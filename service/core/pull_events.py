"""Pull events for what the gateway answers without the registry.

The registry records a `pull` event (through its notifications) for every manifest GET/HEAD
and blob GET it serves. A manifest answered from the gateway's cache or a blob sent from the
storage never reaches it, so the gateway records the equivalent event itself: the same shape
`service.core.webhooks.slim` gives the registry's (`source: "gateway"`), into the same event
streams. Recording must not cost the request a Redis round trip, so events are queued in
memory and written by one background thread per process, as many per pipeline as have
gathered while the previous write ran. The queue is bounded (PENDING_MAX): while Redis is
unreachable the newest events are kept and retried every second, the oldest dropped and
counted (`tagwarden_pull_events_dropped_total`), as the registry's own in-memory queue
loses them on a restart.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from service.store.events import EventStore

log = logging.getLogger("tagwarden.pulls")

PENDING_MAX = 20_000
BATCH = 1000
RETRY_DELAY = 1.0


def pull_event(repository: str, digest: str, media_type: str, size: int, tag: str | None,
               request: dict[str, Any], actor: str | None) -> dict[str, Any]:
    """A pull event shaped like the registry's (after service.core.webhooks.slim)."""
    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return {"id": str(uuid.uuid4()), "action": "pull", "repository": repository,
            "timestamp": now, "media_type": media_type, "digest": digest, "tag": tag,
            "size": size, "from_repository": None, "request": request, "actor": actor,
            "source": "gateway"}


class PullRecorder:
    """Queues pull events and writes them in batches from a background thread."""

    def __init__(self, events: EventStore) -> None:
        self.events = events
        # counts each dropped event in the metrics: set by the app factory, since
        # service.obs.metrics imports service.services, which imports this module
        self.on_drop: Callable[[], None] = lambda: None
        self._pending: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._pid = 0
        self._writing = 0
        self.dropped = 0

    def record(self, event: dict[str, Any]) -> None:
        """Queue one event; never blocks on Redis."""
        with self._cond:
            if self._pid != os.getpid():  # first use in this (maybe forked) process
                self._start()
            if len(self._pending) >= PENDING_MAX:
                self._pending.popleft()
                self.dropped += 1
                self.on_drop()
            self._pending.append(event)
            self._cond.notify()

    def _start(self) -> None:
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="pull-events", daemon=True).start()
        atexit.register(self.flush, 2.0)

    def _take(self) -> list[dict[str, Any]]:
        with self._cond:
            while not self._pending:
                self._cond.wait()
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            self._writing = len(batch)
            return batch

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        try:
            pipe = self.events.r.pipeline(transaction=False)
            for event in batch:
                self.events.record(event, pipe)
            pipe.execute()
            return True
        except Exception as exc:  # noqa: BLE001 - Redis away: keep the events, retry later
            log.warning("pull events not recorded yet (%s); retrying", type(exc).__name__)
            return False

    def _run(self) -> None:
        while True:
            batch = self._take()
            if self._write(batch):
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()
                continue
            with self._cond:  # back to the front, oldest first, within the bound
                self._writing = 0
                room = PENDING_MAX - len(self._pending)
                lost = max(0, len(batch) - room)
                self.dropped += lost
                for _ in range(lost):
                    self.on_drop()
                self._pending.extendleft(reversed(batch[lost:]))
                self._cond.wait(RETRY_DELAY)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event is written (tests, and at exit); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._writing:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True
