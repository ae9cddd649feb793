"""The registry's notification receiver: authenticate, validate, dedupe, queue — fast."""

from __future__ import annotations

import hmac
import json
import threading
from typing import Any

from service.core import jobs
from service.domain.errors import DomainError, InvalidRequest, Unauthorized
from service.obs import metrics
from service.registry.client import MANIFEST_TYPES
from service.services import Services

ACTIONS = ("push", "pull", "mount", "delete")
CONTENT_TYPES = ("application/vnd.docker.distribution.events.v1+json", "application/json")


class PayloadTooLarge(DomainError):
    """A body over the receiver's limit."""


class UnsupportedMediaType(DomainError):
    """Not the registry's envelope media type."""


def authenticate(svc: Services, header: str | None) -> None:
    """The webhook's own bearer token, compared in constant time."""
    expected = svc.settings.webhook_token
    scheme, _, given = (header or "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.encode()):
        raise Unauthorized("missing or wrong webhook token")


def slim(event: dict[str, Any]) -> dict[str, Any] | None:
    """The fields Tagwarden uses from one registry event, or None when it is unusable."""
    target = event.get("target")
    if not isinstance(event.get("id"), str) or not event["id"] or len(event["id"]) > 128:
        return None
    if event.get("action") not in ACTIONS or not isinstance(target, dict):
        return None
    repository = target.get("repository")
    if not isinstance(repository, str) or not repository:
        return None
    request = found if isinstance(found := event.get("request"), dict) else {}
    actor = found if isinstance(found := event.get("actor"), dict) else {}
    out = {
        "id": event["id"], "action": event["action"], "repository": repository,
        "timestamp": event.get("timestamp") if isinstance(event.get("timestamp"), str) else None,
        "media_type": target.get("mediaType"), "digest": target.get("digest"),
        "tag": target.get("tag"), "size": target.get("size"),
        "from_repository": target.get("fromRepository"),
        "request": {"addr": request.get("addr"), "method": request.get("method"),
                    "useragent": request.get("useragent"), "id": request.get("id")},
        "actor": actor.get("name"), "source": "registry",
    }
    for name in ("digest", "tag", "media_type", "from_repository"):
        if out[name] is not None and not isinstance(out[name], str):
            return None
    return out


def needs_processing(event: dict[str, Any]) -> bool:
    """Does a worker have to act on the event (workers.events.process)? A manifest push
    (learn the tag, drift, scan) and a delete (forget, heal) do; pulls, mounts and blob
    pushes are only recorded."""
    if event["action"] == "delete":
        return True
    return (event["action"] == "push" and event.get("media_type") in MANIFEST_TYPES
            and bool(event.get("digest")))


def direct_streams(svc: Services) -> Any:
    """Events that need no processing are recorded by the receiver itself (same Lua call as
    the dedupe); the others go to the inbox for the workers."""
    return lambda event: None if needs_processing(event) else svc.events.streams(event)


class _Slot:
    """One envelope waiting in a GroupCommit: its events, and the answer its writer left."""

    __slots__ = ("events", "done", "lead", "result", "error")

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.done = threading.Event()
        self.lead = False
        self.result: tuple[int, bool] = (0, False)
        self.error: BaseException | None = None


class GroupCommit:
    """Envelopes that arrive while another thread of the process is writing to Redis are
    written together by the next one, in one round trip (Inbox.accept_envelopes): the
    registry posts one event per request, so under load most of a receiver's cost was one
    script call per event. Each envelope still gets its own exact answer."""

    MAX_EVENTS = 2000  # per round trip, so one script call stays short

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._busy = False

    def accept(self, svc: Services, events: list[dict[str, Any]]) -> tuple[int, bool]:
        """(new events of this envelope, schedule a drain?), written with whatever other
        envelopes are waiting; raises what the write raised."""
        slot = _Slot(events)
        with self._lock:
            self._pending.append(slot)
            slot.lead = not self._busy
            self._busy = True
        if not slot.lead:
            slot.done.wait()
        if slot.lead:  # first in, or handed the lead by the previous writer
            self._write(svc)
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _write(self, svc: Services) -> None:
        with self._lock:
            batch: list[_Slot] = []
            size = 0
            while self._pending and (not batch or size + len(self._pending[0].events)
                                     <= self.MAX_EVENTS):
                size += len(self._pending[0].events)
                batch.append(self._pending.pop(0))
        try:
            counts, kick = svc.inbox.accept_envelopes([s.events for s in batch],
                                                      direct_streams(svc))
            for i, item in enumerate(batch):
                item.result = (counts[i], kick and i == 0)
        except BaseException as exc:  # each envelope's request answers (or fails) on it
            for item in batch:
                item.error = exc
        finally:  # whatever happened, the next writer is named: nobody waits forever
            with self._lock:
                if self._pending:
                    self._pending[0].lead = True
                    self._pending[0].done.set()
                else:
                    self._busy = False
            for item in batch:
                item.lead = False
                item.done.set()


_group = GroupCommit()


def receive(svc: Services, content_type: str, body: bytes) -> dict[str, int]:
    """Accept an envelope: {"accepted", "duplicates", "skipped"}; malformed events counted."""
    if content_type.split(";")[0].strip().lower() not in CONTENT_TYPES:
        raise UnsupportedMediaType(f"content type must be one of {', '.join(CONTENT_TYPES)}")
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("body is not JSON", errors={"body": ["invalid JSON"]}) from None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("events"), list):
        raise InvalidRequest("body is not a notification envelope",
                             errors={"events": ["a list of events is required"]})
    usable = [e for e in (slim(x) if isinstance(x, dict) else None for x in envelope["events"])
              if e is not None]
    skipped = len(envelope["events"]) - len(usable)
    accepted, kick = _group.accept(svc, usable) if usable else (0, False)
    if skipped:
        svc.events.count("webhook.malformed", skipped)
    if kick:
        jobs.enqueue_drain(svc.queue)
    metrics.webhook(accepted, len(usable) - accepted, skipped)
    return {"accepted": accepted, "duplicates": len(usable) - accepted, "skipped": skipped}
