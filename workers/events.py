"""Processing of registry events: record, learn tags, scan on push, detect and heal drift."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from service.core import drift, governance, referrers
from service.core.webhooks import needs_processing
from service.domain.policy import is_immutable
from service.domain.referrers import SUBJECT_TYPES
from service.obs import metrics
from service.services import Services
from workers.context import services

log = logging.getLogger("tagwarden.events")
SETTLE_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)  # the registry notifies before linking the tag
LINGER_MS = 250


def drain(max_seconds: float = 300.0, linger_ms: int = LINGER_MS) -> dict[str, int]:
    """Process the inbox until it is empty (or for at most `max_seconds`).

    An empty inbox is watched for `linger_ms` more before the job ends, unless other jobs
    are waiting for the worker: the registry posts one event per request, and under a steady
    trickle a job per event (a forked work horse each) would cost more than the events."""
    svc = services()
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    processed = failed = 0
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        batch = svc.inbox.read(consumer)
        if not batch and linger_ms and not svc.queue.count:
            batch = svc.inbox.wait(consumer, linger_ms)
        if not batch:
            svc.inbox.done_draining()
            batch = svc.inbox.read(consumer)  # an event accepted just before the flag dropped
            if not batch:
                break
        for entry_id, event in batch:
            try:
                process(svc, event)
                processed += 1
            except Exception:  # noqa: BLE001 - one bad event must not stall the others
                log.exception("event %s failed", event.get("id"))
                svc.events.count("webhook.failed")
                metrics.webhook_failed()
                failed += 1
            # processed at least once (a redelivered entry is handled again), recorded once
            svc.inbox.finish(entry_id, event, svc.events)
    return {"processed": processed, "failed": failed}


def process(svc: Services, event: dict[str, Any]) -> None:
    """Act on one registry event (`Inbox.finish` records it afterwards)."""
    if not needs_processing(event):  # recorded by the receiver itself since (older entries)
        return
    if event["action"] == "delete":
        on_delete(svc, event)
    else:
        on_manifest_push(svc, event)


def _settled(svc: Services, repository: str, tag: str, digest: str) -> str | None:
    """The tag's digest once the registry has linked it (or what it is after waiting)."""
    found = svc.registry.head_manifest(repository, tag)
    for delay in SETTLE_DELAYS:
        if found == digest:
            break
        time.sleep(delay)
        found = svc.registry.head_manifest(repository, tag)
    return found


def on_manifest_push(svc: Services, event: dict[str, Any]) -> None:
    """Index a referrer, learn the tag, heal environment/immutable tags moved behind the
    gateway's back, scan."""
    repository, digest, tag = event["repository"], event["digest"], event.get("tag")
    svc.retention.mark_pushed(repository, digest)  # also pushes behind the gateway's back
    if event.get("media_type") in SUBJECT_TYPES:  # tagged or not: a referrer is often neither
        referrers.index_from_registry(svc, repository, digest)
    policy = governance.policy_for(svc, repository)
    if tag and tag in policy.environments:
        if check_environment_tag(svc, repository, tag, digest):
            return  # the gateway's own promotion write: the digest was scanned when pushed
    elif tag:
        if svc.tags.get(repository, tag) == digest:
            return  # pushed through the gateway, which recorded it and queued scan-on-push
        with svc.tags.lock(repository, tag):
            immutable = is_immutable(policy, tag)
            bound = svc.bindings.get(repository, tag) if immutable else None
            expected = bound or svc.tags.get(repository, tag)
            if immutable and expected is not None and expected != digest:
                found = _settled(svc, repository, tag, digest)
                drift.check_tag(svc, repository, tag, expected, found, "immutable")
            elif _settled(svc, repository, tag, digest) == digest:
                svc.tags.set(repository, tag, digest, bind=immutable)
            else:  # an event the registry does not bear out (forged, or overtaken since)
                log.warning("push event %s for %s:%s not confirmed by the registry",
                            event.get("id"), repository, tag)
                return
    if tag:  # an index's children arrive untagged: the tagged index covers them
        governance.scan_after_push(svc, repository, digest)


def check_environment_tag(svc: Services, repository: str, tag: str, digest: str) -> bool:
    """An environment tag was written: fine if by the gateway, drift otherwise. True when the
    write was the gateway's own (a promotion or rollback, current or superseded since).
    The lock is held only for the final comparison, never while waiting on the registry."""
    pointer = svc.environments.digests(repository).get(tag)
    intent = svc.promotions.intent(repository, tag)
    if digest == pointer or (intent and intent["record"]["digest"] == digest):
        return True
    if pointer is None:
        return False
    ours = digest in {r["digest"] for r in svc.promotions.recent(repository, tag, 50)}
    # an old write of the gateway's own, superseded since: only the current state matters;
    # a foreign write may not be linked yet when its event arrives: wait for it to land
    found = (svc.registry.head_manifest(repository, tag) if ours
             else _settled(svc, repository, tag, digest))
    if found == svc.environments.digests(repository).get(tag):
        return ours
    lock = svc.promotions.lock(repository, tag, wait=30.0)
    if not lock.acquire():
        return ours
    try:
        if svc.promotions.intent(repository, tag) is not None:
            return ours  # a promotion is completing; reconciliation will compare afterwards
        pointer = svc.environments.digests(repository).get(tag)
        found = svc.registry.head_manifest(repository, tag)
        if pointer is not None:
            drift.check_tag(svc, repository, tag, pointer, found, "environment")
    finally:
        lock.release()
    return ours


def on_delete(svc: Services, event: dict[str, Any]) -> None:
    """A manifest or tag was deleted in the registry: forget it, heal environment tags."""
    repository, digest, tag = event["repository"], event.get("digest"), event.get("tag")
    pointers = svc.environments.digests(repository)
    if tag:
        if tag in pointers:
            drift.check_tag(svc, repository, tag, pointers[tag],
                            svc.registry.head_manifest(repository, tag), "environment")
        elif svc.registry.head_manifest(repository, tag) is None:  # events are checked
            svc.tags.forget(repository, tag)
    elif digest:
        if svc.registry.head_manifest(repository, digest) is None:
            governance.after_manifest_delete(svc, repository, digest)
        for env, pointed in pointers.items():
            if pointed == digest:
                drift.check_tag(svc, repository, env, pointed,
                                svc.registry.head_manifest(repository, env), "environment")
