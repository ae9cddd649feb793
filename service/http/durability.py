"""Acknowledged writes survive a failover: with TAGWARDEN_REDIS_MIN_REPLICAS, a request that
changed governed state is answered 2xx only once that many replicas hold every write it made.

Promotions, rollbacks and hotfixes wait inside their own commit (service.core.promotions,
with intents and settling; their routes say `waits_for_replicas=True`); every other write —
tokens, policies, bindings, approvals, verifications, retention, subscriptions, backups
restored, vulnerability imports, registry events acknowledged to the registry, and /v2
manifest PUTs and deletes (tag map, bindings) —
is covered here: before the view, the primary must be streaming to enough replicas in sync
(else 503 and nothing is written); after it, one barrier write and WAIT
(service.store.replicated) proves the replicas hold the request's writes. Only a replica lost
between the two leaves a 503 whose write is complete on the primary (every write is atomic
there: nothing is half-done), and the answer says so: it may be lost if the primary fails
before its replicas catch up.
"""

from __future__ import annotations

from flask import Flask, Response, g, request
from redis.exceptions import RedisError

from service.domain.errors import StoreUnavailable
from service.http.api import meta as route_meta
from service.http.errors import handle_domain
from service.services import Services
from service.store import NotReplicated, replicas_online, replicated

READS = frozenset(("GET", "HEAD", "OPTIONS"))
# /v2 writes that change governed state (blob uploads only hold a resumable session)
V2_GOVERNED = frozenset((("manifest", "PUT"), ("manifest", "DELETE"), ("blob", "DELETE")))


def _needs_barrier() -> bool:
    if request.method in READS:
        return False
    route = g.get("v2_route")
    if route is not None:
        return (route.kind, request.method) in V2_GOVERNED
    meta = route_meta.current()  # a route that waits for its replicas itself needs no barrier
    return meta is not None and not meta.waits_for_replicas


def install(app: Flask, svc: Services) -> None:
    """Wait for the replicas after every successful governed write (when configured)."""
    replicas = svc.settings.redis_min_replicas
    if not replicas:
        return
    timeout_ms = svc.promotions.wait_ms

    @app.before_request
    def _replicas_first() -> Response | None:
        if not _needs_barrier():
            return None
        try:
            online = replicas_online(svc.redis)
        except RedisError:
            return None  # the write itself meets the outage and is answered as usual
        if online >= replicas:
            return None
        return handle_domain(StoreUnavailable(
            f"{online} of {replicas} Redis replicas are in sync: the write was refused "
            "before anything was written; retry when they are back"))

    @app.after_request
    def _barrier(resp: Response) -> Response:
        if not 200 <= resp.status_code < 300 or not _needs_barrier():
            return resp
        try:
            replicated(svc.redis, replicas, timeout_ms)
        except NotReplicated as exc:
            return handle_domain(StoreUnavailable(
                f"the write was applied but {exc}; it may be lost if the Redis primary fails "
                "before its replicas catch up: check its result before retrying"))
        except RedisError:
            return handle_domain(StoreUnavailable(
                "the write was applied but the state store failed before its replicas "
                "acknowledged it: check its result before retrying"))
        return resp
