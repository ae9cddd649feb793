"""Request hooks: authentication, authorization, rate limits, body limits, audit, headers."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Flask, Response, g, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from service.core import auth
from service.domain.errors import DomainError, Forbidden, Unauthorized
from service.http import clientaddr
from service.http.api import meta as api_meta
from service.http.bodies import peek_json
from service.registry import routes
from service.services import Services

log = logging.getLogger("tagwarden.security")
OPEN_PATHS = ("/healthz", "/readyz")
DOC_PATHS = ("/openapi.yaml", "/openapi.json", "/docs")
# an /api/v1 request that matches no route (a 404 or 405 follows) is authenticated like any
# call and needs what a route would: reader to read, admin to write
UNROUTED_READ = api_meta.RouteMeta("reader", "repository")
UNROUTED_WRITE = api_meta.RouteMeta("admin", "repository")


class RateLimited(DomainError):
    """Too many calls for one token, or too many failed authentications from one address."""


class FailOpenLimiter:
    """A fixed-window limit counted in Redis that never stands between a caller and a
    service that works without Redis: while Redis is unreachable every call is let through
    and its hits are kept here (bounded), to be counted once Redis answers again."""

    PENDING_MAX = 10_000  # distinct identifiers remembered during an outage

    def __init__(self, svc: Services, limit: str, prefix: str) -> None:
        # the gateway's own client: behind its breaker, so an outage costs no timeout here
        storage = RedisStorage("redis://", connection_pool=svc.redis.connection_pool,
                               key_prefix=prefix, wrap_exceptions=True)
        self.limiter = FixedWindowRateLimiter(storage)
        self.item: RateLimitItem = parse(limit)
        self.limit = limit
        self.pending: Counter[tuple[str, ...]] = Counter()
        self._lock = threading.Lock()
        if svc.breaker is not None:
            svc.breaker.listeners.append(self.catch_up)

    def hit(self, *identifiers: str) -> bool:
        """Count one hit; False when over the limit (True while Redis is unreachable)."""
        try:
            return self.limiter.hit(self.item, *identifiers)
        except (StorageError, redis.RedisError) as exc:
            self._defer(identifiers, exc)
            return True

    def reset_in(self, *identifiers: str) -> float | None:
        """Seconds until the window of a caller over the limit ends; None when under it (or
        while Redis is unreachable)."""
        try:
            if self.limiter.test(self.item, *identifiers):
                return None
            reset = self.limiter.get_window_stats(self.item, *identifiers).reset_time
        except (StorageError, redis.RedisError) as exc:
            log.warning("limiter %s unavailable (%s); not enforced", self.limit,
                        type(exc).__name__)
            return None
        return reset - time.time()

    def _defer(self, identifiers: tuple[str, ...], exc: Exception) -> None:
        log.warning("limiter %s unavailable (%s); hit counted later", self.limit,
                    type(exc).__name__)
        with self._lock:
            if identifiers in self.pending or len(self.pending) < self.PENDING_MAX:
                self.pending[identifiers] += 1

    def catch_up(self) -> None:
        """Count the hits of the outage (called when Redis answers again)."""
        with self._lock:
            pending, self.pending = self.pending, Counter()
        for identifiers, cost in pending.items():
            try:
                self.limiter.hit(self.item, *identifiers, cost=cost)
            except (StorageError, redis.RedisError):
                return


class AuthFailureGuard:
    """Failed authentications counted per client address (TAGWARDEN_AUTH_FAILURE_LIMIT).

    Once an address has failed `limit` times within the window, every request from it that
    presents credentials is refused with 429 until the window passes, a correct token
    included: otherwise a guesser would keep guessing and learn from a 200 which guess was
    right. Requests without credentials (the client's first, anonymous probe of /v2/) and
    successful ones never count. Without Redis the guard lets everything through (fails
    open): authentication itself still decides, and an outage never becomes a 500."""

    # an address that just authenticated here is believed clear this long without asking
    # Redis again (one round trip per request was a third of a cached manifest GET's cost)
    CLEAR_FOR = 1.0
    CLEAR_MAX = 10_000  # addresses remembered per process

    def __init__(self, svc: Services, limit: str) -> None:
        self.counter = FailOpenLimiter(svc, limit, "tw:authfail")
        self.limit = limit
        self._clear: dict[str, float] = {}  # address -> monotonic time the belief ends

    def check(self, address: str) -> None:
        """RateLimited (with Retry-After) when the address is locked out. An address that
        authenticated in this process less than CLEAR_FOR ago is let through without asking
        Redis: a wrong guess from it is still counted, and refused once over the limit
        (`failed`), so only an address that also succeeds (a token it holds) meets that
        belief."""
        until = self._clear.get(address)
        if until is not None and until > time.monotonic():
            return
        reset_in = self.counter.reset_in("address", address)
        if reset_in is not None:
            self._refuse(address, reset_in)

    def succeeded(self, address: str) -> None:
        """The address authenticated: believe it clear for CLEAR_FOR."""
        if len(self._clear) >= self.CLEAR_MAX:
            self._clear.clear()
        self._clear[address] = time.monotonic() + self.CLEAR_FOR

    def failed(self, address: str) -> None:
        """Count one failed authentication of the address (later, during an outage); the
        failure that crosses the limit, or any after it, is refused as a lockout."""
        self._clear.pop(address, None)
        if not self.counter.hit("address", address):
            self._refuse(address, self.counter.reset_in("address", address) or 1.0)

    def _refuse(self, address: str, reset_in: float) -> None:
        wait = max(1, math.ceil(reset_in))
        raise RateLimited(f"too many failed authentications from {address} (limit "
                          f"{self.limit}); try again in {wait} s",
                          headers={"Retry-After": str(wait)})


def _set_actor(principal: auth.Principal | None) -> None:
    g.principal = principal
    g.actor_id = principal.id if principal else None
    g.actor_name = principal.name if principal else None


def _target(meta: api_meta.RouteMeta) -> dict[str, Any]:
    target: dict[str, Any] = dict(request.view_args or {})
    for name in ("repository", "tag"):  # listings and releases name them in the query
        if isinstance(request.args.get(name), str):
            target[name] = request.args[name]
    body = None if meta.body == "stream" else peek_json()
    if isinstance(body, dict):
        for name in ("repository", "environment", "name", "role", "tag", "digest", "to",
                     "reference", "from_environment", "reason", "result"):
            if isinstance(body.get(name), str):
                target[name] = body[name]
        if body.get("hotfix") is True:  # a hotfix promotion or a hotfix approval
            target["hotfix"] = True
        if isinstance(body.get("url"), str):
            target["url"] = _url_origin(body["url"])
    return target


def _url_origin(url: str) -> str:
    """scheme://host of a URL: its path, query and user part may hold credentials."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}"
    except ValueError:  # a bracketed host that is no IPv6 address
        return "(invalid URL)"


def _v2_principal(svc: Services, header: str | None) -> auth.Principal | None:
    """The /v2 caller: None when anonymous (no credentials, or the empty Basic ones clients
    send after a challenge when they hold none), Unauthorized when credentials are wrong."""
    if auth.holds_no_credentials(header):
        return None
    principal = auth.from_basic(svc, header)
    if principal is None and header:
        raise Unauthorized("invalid, expired or revoked token")
    return principal


def _registry_refusal(svc: Services, principal: auth.Principal | None, route: routes.V2Route,
                      exc: Forbidden) -> DomainError:
    """Audit a refused /v2 request and make its reason reach the client where the protocol
    lets it: the error envelope, and `WWW-Authenticate` error text for bodiless answers. A
    HEAD of a blob (how a pusher asks whether a layer exists) answers 404 instead of a bare
    403 — nothing about the repository is disclosed either way — so that the client goes on to
    its upload request, whose 403 carries the reason in a body that skopeo, podman and docker
    print."""
    method = request.method
    action = "registry.pull" if method in ("GET", "HEAD") else (
        "registry.delete" if method == "DELETE" else "registry.push")
    target = {"repository": route.name or None, "method": method, "route": route.kind,
              "reference": route.ref or None, "reason": exc.message}
    try:
        svc.audit.record(action, (g.get("actor_id"), g.get("actor_name")), target, "denied",
                         403, request.environ.get("tagwarden.request_id"))
    except Exception:  # noqa: BLE001 - logged; the refusal stands
        log.exception("could not write audit entry for a refused %s", action)
    if method == "HEAD" and route.kind == "blob" and principal is not None:
        return routes.BadRoute("BLOB_UNKNOWN", "blob unknown to registry",
                               {"digest": route.ref})
    text = exc.message.replace('"', "'").encode("ascii", "replace").decode()
    return Forbidden(exc.message, headers={"WWW-Authenticate": (
        f'Basic realm="tagwarden", error="insufficient_scope", error_description="{text}"')})


def install(app: Flask, svc: Services) -> None:
    """Register the hooks on the app."""
    settings = svc.settings
    limiter = (FailOpenLimiter(svc, settings.rate_limit, "tw:rate")
               if settings.rate_limit != "off" else None)
    guard = (AuthFailureGuard(svc, settings.auth_failure_limit)
             if settings.auth_failure_limit != "off" else None)
    body_limits = {"json": settings.api_max_bytes, "upload": settings.vulndb_upload_max_bytes,
                   "stream": settings.restore_max_bytes}

    def authenticated(resolve: Callable[[str | None], Any]) -> Any:
        """`resolve(Authorization header)`, with failed attempts counted per client address
        and a locked-out address refused before its credentials are even looked at."""
        header = request.headers.get("Authorization")
        if guard is None or not header:
            return resolve(header)
        address = clientaddr.client_address(request.environ, settings.trust_forwarded)
        guard.check(address)
        try:
            found = resolve(header)
        except Unauthorized:
            guard.failed(address)
            raise
        guard.succeeded(address)
        return found

    @app.before_request
    def _authenticate() -> None:
        path = request.path
        _set_actor(None)
        if path.startswith("/api/v1/"):
            meta = api_meta.current() or (UNROUTED_READ if request.method in ("GET", "HEAD")
                                          else UNROUTED_WRITE)
            request.max_content_length = body_limits[meta.body]
            if meta.role is None:
                return  # the route authenticates its caller itself (the registry's webhook)
            if (request.content_length is None and request.method in ("POST", "PUT", "PATCH")
                    and meta.body != "stream"):
                # a chunked body: read it within the limit; werkzeug raises 413 on the byte
                # after the limit, which a plain read-all would silently drop
                request.get_data(cache=True)
                request.stream.read(1)
            principal = authenticated(lambda header: auth.from_bearer(svc, header))
            _set_actor(principal)
            if (limiter is not None and meta.rate is not None
                    and not limiter.hit(meta.rate, principal.id)):
                raise RateLimited(f"rate limit {settings.rate_limit} exceeded for token "
                                  f"{principal.name!r}")
            # a streamed body (a restore) is of any size: never parsed whole here
            body = None if meta.body == "stream" else peek_json(strict=True)
            auth.authorize_api(principal, meta.role, meta.scope, body, request.args.to_dict())
        elif path == "/v2" or path.startswith("/v2/"):
            principal = authenticated(lambda header: _v2_principal(svc, header))
            _set_actor(principal)
            route = routes.parse(path[len("/v2/"):] if path.startswith("/v2/") else "",
                                 request.method)
            g.v2_route = route
            needs = auth.registry_access(request.method, route, request.args.to_dict())
            try:
                auth.authorize_registry(principal, needs, settings.anonymous_pull)
            except Forbidden as exc:
                raise _registry_refusal(svc, principal, route, exc) from None
            if request.method not in ("GET", "HEAD"):
                # a push or delete needs the store (policy, tag map, bindings) at its end:
                # refuse it before the registry holds half of it
                svc.redis.ping()
        elif (path in DOC_PATHS or path.startswith("/docs/")) and not settings.open_docs:
            _set_actor(authenticated(lambda header: auth.from_bearer(svc, header)))
        elif path == "/metrics" and not settings.open_metrics:
            _set_actor(authenticated(lambda header: auth.from_bearer(svc, header)))

    @app.after_request
    def _audit(resp: Response) -> Response:
        meta = api_meta.current()
        action = meta.audit if meta is not None else None
        if meta is not None and action and request.method not in ("GET", "HEAD") and g.get(
                "principal"):
            outcome = g.get("audit_outcome") or ("success" if resp.status_code < 400 else (
                "denied" if resp.status_code in (401, 403) else "error"))
            try:
                svc.audit.record(action, (g.get("actor_id"), g.get("actor_name")), _target(meta),
                                 outcome, resp.status_code,
                                 request.environ.get("tagwarden.request_id"))
            except Exception:  # noqa: BLE001 - logged; the call itself already happened
                log.exception("could not write audit entry for %s", action)
        if resp.mimetype == "text/html":
            resp.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; "
                                    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'")
            resp.headers.setdefault("X-Frame-Options", "DENY")
            resp.headers.setdefault("Referrer-Policy", "no-referrer")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp
