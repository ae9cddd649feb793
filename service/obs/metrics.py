"""Prometheus metrics: the metric objects, the helpers that record them, the scrape.

No Flask here (the workers record metrics too): the request hooks and the GET /metrics view
are service/http/metrics_hooks.py. Labels stay bounded: routes are URL-rule templates (never
raw paths), no repository or tag label, rule ids and environments pass through `_bounded`.
Under gunicorn (and in RQ workers) samples go to PROMETHEUS_MULTIPROC_DIR (see
service/obs/multiproc.py) and /metrics adds up every process's files; without it, this
process's own registry is exposed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.obs import multiproc
from service.services import Services

log = logging.getLogger("tagwarden.metrics")
multiproc.ensure_dir()  # before the first metric opens its file there

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
SCAN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST  # of the scrape's text
MAX_LABEL_VALUES = 64  # distinct values per free-text label and process; then "other"
LABEL_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,63}$")

REQUESTS = Counter("tagwarden_http_requests_total", "HTTP requests answered",
                   ["method", "route", "status"])
LATENCY = Histogram("tagwarden_http_request_duration_seconds",
                    "Time from request to response headers (streamed bodies not included)",
                    ["method", "route", "status"], buckets=LATENCY_BUCKETS)
PROXY_BYTES = Counter("tagwarden_proxy_bytes_total",
                      "Bytes through the /v2 proxy: in from clients, out to clients",
                      ["direction"])
ACCEL_BLOBS = Counter("tagwarden_proxy_blob_redirects_total",
                      "Blob GETs authorized by the gateway and handed to the front proxy "
                      "(X-Accel-Redirect); their bytes are not in tagwarden_proxy_bytes_total")
LOCAL_BLOBS = Counter("tagwarden_proxy_blob_sendfile_total",
                      "Blob GETs answered from the registry's storage "
                      "(TAGWARDEN_REGISTRY_STORAGE), with sendfile or copied")
LOCAL_BLOBS_COPIED = Counter("tagwarden_proxy_blob_copied_total",
                             "Of those, the blob GETs copied (read and written) instead of "
                             "sent with sendfile (TAGWARDEN_BLOB_SEND)")
MANIFEST_CACHE_HITS = Counter("tagwarden_manifest_cache_hits_total",
                              "Manifest GET/HEADs answered from the gateway's manifest cache")
PULL_EVENTS_DROPPED = Counter("tagwarden_pull_events_dropped_total",
                              "Pull events of locally answered pulls lost (Redis unreachable "
                              "and the process's queue full)")
DECISIONS = Counter("tagwarden_policy_decisions_total",
                    "Policy decisions on pushes, deletes, promotions and rollbacks: one "
                    "'allowed' per allowed decision, one 'denied' per violated rule",
                    ["action", "rule", "outcome"])
PROMOTIONS = Counter("tagwarden_promotions_total", "Promotion and rollback requests by outcome",
                     ["kind", "environment", "outcome"])
SCANS = Counter("tagwarden_scans_total", "Finished scans", ["outcome"])
SCAN_SECONDS = Histogram("tagwarden_scan_duration_seconds", "Scan duration", ["outcome"],
                         buckets=SCAN_BUCKETS)
WEBHOOK_RECEIVED = Counter("tagwarden_webhook_events_received_total",
                           "Registry events received in notification envelopes")
WEBHOOK_DUPLICATES = Counter("tagwarden_webhook_events_deduplicated_total",
                             "Registry events dropped as already received (same event id)")
WEBHOOK_MALFORMED = Counter("tagwarden_webhook_events_malformed_total",
                            "Registry events skipped as unusable")
WEBHOOK_FAILED = Counter("tagwarden_webhook_events_failed_total",
                         "Registry events whose processing failed in a worker")
DELIVERIES = Counter("tagwarden_deliveries_total", "Outgoing webhook delivery attempts",
                     ["outcome"])

_seen: dict[str, set[str]] = {}
_seen_lock = threading.Lock()


def _bounded(label: str, value: str | None) -> str:
    """`value` if well-formed and among the first MAX_LABEL_VALUES seen, else "other"."""
    if not value or not LABEL_RE.match(value):
        return "other"
    with _seen_lock:
        seen = _seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return "other"
        seen.add(value)
    return value


# -- helpers called from the domain and the workers -----------------------------------------
def decision(action: str, result: Any) -> None:
    """Count a policy decision (service.domain.policy.Decision) for push, delete, promote or
    rollback: `allowed`, or one `denied` per violated rule."""
    if result.allowed:
        DECISIONS.labels(action, "none", "allowed").inc()
        return
    for violation in result.violations:
        DECISIONS.labels(action, _bounded("rule", violation.rule), "denied").inc()


def promotion(kind: str, environment: str | None, outcome: str) -> None:
    """Count a promotion or rollback: succeeded, dry_run, denied, conflict, rejected, failed."""
    PROMOTIONS.labels(kind, _bounded("environment", environment), outcome).inc()


def scan(outcome: str, seconds: float) -> None:
    """Count a finished scan (succeeded or failed) and its duration."""
    SCANS.labels(outcome).inc()
    SCAN_SECONDS.labels(outcome).observe(seconds)


def webhook(accepted: int, duplicates: int, malformed: int) -> None:
    """Count the events of one notification envelope."""
    WEBHOOK_RECEIVED.inc(accepted + duplicates + malformed)
    if duplicates:
        WEBHOOK_DUPLICATES.inc(duplicates)
    if malformed:
        WEBHOOK_MALFORMED.inc(malformed)


def accel_blob() -> None:
    """Count a blob GET handed to the front proxy."""
    ACCEL_BLOBS.inc()


def local_blob(length: int, copied: bool = False) -> None:
    """A blob GET answered from the storage: with sendfile (its `length` bytes counted here:
    the kernel sends them), or copied (its chunks counted as they are sent, like any
    streamed body)."""
    LOCAL_BLOBS.inc()
    if copied:
        LOCAL_BLOBS_COPIED.inc()
    else:
        PROXY_BYTES.labels("out").inc(length)


def manifest_cache_hit() -> None:
    """A manifest GET/HEAD answered from the cache."""
    MANIFEST_CACHE_HITS.inc()


def pull_event_dropped() -> None:
    """A pull event of a locally answered pull was dropped."""
    PULL_EVENTS_DROPPED.inc()


def webhook_failed(count: int = 1) -> None:
    """Count registry events whose processing raised."""
    WEBHOOK_FAILED.inc(count)


def delivery(outcome: str) -> None:
    """Count one delivery attempt: delivered, retrying, failed (gave up) or cancelled."""
    DELIVERIES.labels(outcome).inc()


# -- HTTP: requests, proxied bytes, promotions (recorded by service/http/metrics_hooks.py) ----
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def http_request(method: str, route: str, status: int, seconds: float | None) -> None:
    """Count an answered request under its route template (`unmatched` when none), and its
    time to response headers when known."""
    method = method if method in METHODS else "other"
    REQUESTS.labels(method, route, str(status)).inc()
    if seconds is not None:
        LATENCY.labels(method, route, str(status)).observe(seconds)


def proxy_bytes_out(length: int) -> None:
    """Bytes of a /v2 answer sent whole (not streamed through CountingBody)."""
    PROXY_BYTES.labels("out").inc(length)


def promotion_outcome(status: int) -> str:
    """The outcome of a promotion or rollback call, from its HTTP status."""
    if status == 201:
        return "succeeded"
    if status < 300:
        return "dry_run"
    return {403: "denied", 409: "conflict"}.get(status, "rejected" if status < 500 else "failed")


class CountingStream:
    """A WSGI input stream that counts the bytes read from it."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, *args: Any) -> bytes:
        return self._count(self._stream.read(*args))

    def readline(self, *args: Any) -> bytes:
        return self._count(self._stream.readline(*args))

    def readlines(self, *args: Any) -> list[bytes]:
        return [self._count(line) for line in self._stream.readlines(*args)]

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            yield self._count(line)

    def _count(self, data: bytes) -> bytes:
        if data:
            PROXY_BYTES.labels("in").inc(len(data))
        return data


class CountingBody:
    """A response body that counts the bytes sent, and closes the body it wraps."""

    def __init__(self, body: Iterable[Any]) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            if chunk:
                PROXY_BYTES.labels("out").inc(len(chunk))
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


# -- the scrape (GET /metrics) -----------------------------------------------------------------
class QueueCollector(Collector):
    """RQ job counts per state, read from Redis at scrape time."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from redis import RedisError

        queue = self.svc.queue
        breaker = getattr(self.svc, "breaker", None)
        if breaker is not None and breaker.is_open:
            return  # Redis is unreachable: a scrape does not wait for it
        family = GaugeMetricFamily("tagwarden_queue_jobs", "RQ jobs by state",
                                   labels=["queue", "state"])
        try:
            counts = {
                "queued": queue.count,
                "started": queue.started_job_registry.count,
                "scheduled": queue.scheduled_job_registry.count,
                "deferred": queue.deferred_job_registry.count,
                "failed": queue.failed_job_registry.count,
            }
        except RedisError as exc:
            log.warning("queue depth not collected: %s", type(exc).__name__)
            return
        for state, count in counts.items():
            family.add_metric([queue.name, state], count)
        yield family


class _Forward(Collector):
    """Everything of another registry (single-process mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Any]:
        return self.registry.collect()


def scrape(svc: Services) -> bytes:
    """The text exposition of every process's metrics plus the queue depths."""
    registry = CollectorRegistry()
    if multiproc.enabled():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(QueueCollector(svc))
    return generate_latest(registry)
