"""What an /api/v1 route needs and does, declared on the route itself.

`@endpoint(...)` sits under `@blp.route(...)` on every view of the API and states who may call
it (role and scope), what it audits, its rate class and metric label, the extra statuses its
OpenAPI operation documents, how its body is read, and whether it waits for the Redis replicas
itself (http/durability). The request hooks (http/security,
http/metrics_hooks) and the OpenAPI builder read it from the index that `index(app)` builds
once at app creation; that index fails when an /api/v1 route has no metadata, so a new
endpoint cannot silently fall back to a default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Flask, current_app, request

from service.core.auth import ROLE_RANK

ATTRIBUTE = "_tagwarden_route"
EXTENSION = "tagwarden.routes"
API_PREFIX = "/api/v1/"
SCOPES = ("", "repository", "repository+environment")
# how the request hooks treat the body: `json` is read whole (within TAGWARDEN_API_MAX_BYTES)
# and looked into by authorization and audit; `upload` the same within
# TAGWARDEN_VULNDB_UPLOAD_MAX_BYTES; `stream` is left to the view, which bounds it itself
# (TAGWARDEN_RESTORE_MAX_BYTES), and never parsed by the hooks
BODIES = ("json", "upload", "stream")
METRICS = ("promotion", "rollback")  # tagwarden_promotions_total's `kind`
F = TypeVar("F", bound=Callable[..., Any])


class MissingRouteMetadata(RuntimeError):
    """An /api/v1 route without `@endpoint(...)`: the app is not built."""


@dataclass(frozen=True)
class RouteMeta:
    """The metadata of one /api/v1 route."""

    role: str | None  # the least role; None: the route authenticates its caller itself
    scope: str  # what of the body/query must be inside the token's globs
    audit: str | None = None  # the audit action of a call that is not a GET/HEAD
    rate: str | None = "api"  # the per-token rate limit bucket; None: not limited
    metric: str | None = None  # the promotion `kind` counted from this call's outcome
    idempotent: bool = False  # takes an Idempotency-Key (documented)
    errors: tuple[int, ...] = ()  # statuses documented beyond the generic ones
    body: str = "json"
    # the use case waits for TAGWARDEN_REDIS_MIN_REPLICAS itself (promotions: intent and
    # commit); http/durability then adds no barrier of its own
    waits_for_replicas: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.role is not None and self.role not in ROLE_RANK:
            problems.append(f"role {self.role!r}")
        if self.scope not in SCOPES:
            problems.append(f"scope {self.scope!r}")
        if self.body not in BODIES:
            problems.append(f"body {self.body!r}")
        if self.metric is not None and self.metric not in METRICS:
            problems.append(f"metric {self.metric!r}")
        if self.role is None and (self.scope or self.rate):
            problems.append("a route that authenticates itself has no scope and no rate")
        if problems:
            raise ValueError(f"invalid route metadata: {', '.join(problems)}")


def endpoint(*, role: str | None, scope: str, audit: str | None = None,
             rate: str | None = "api", metric: str | None = None, idempotent: bool = False,
             errors: tuple[int, ...] = (), body: str = "json",
             waits_for_replicas: bool = False) -> Callable[[F], F]:
    """Attach the route's metadata to its view (put it right under `@blp.route`)."""
    meta = RouteMeta(role, scope, audit, rate, metric, idempotent, tuple(errors), body,
                     waits_for_replicas)

    def decorate(view: F) -> F:
        setattr(view, ATTRIBUTE, meta)
        return view

    return decorate


def index(app: Flask) -> dict[str, RouteMeta]:
    """Flask endpoint → metadata of every /api/v1 route; MissingRouteMetadata naming the
    routes that have none."""
    found: dict[str, RouteMeta] = {}
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API_PREFIX):
            continue
        meta = getattr(app.view_functions[rule.endpoint], ATTRIBUTE, None)
        if isinstance(meta, RouteMeta):
            found[rule.endpoint] = meta
        else:
            missing.append(f"{rule.rule} ({rule.endpoint})")
    if missing:
        raise MissingRouteMetadata("routes without @endpoint(...) metadata: "
                                   + ", ".join(sorted(missing)))
    return found


def install(app: Flask) -> None:
    """Build the index once, after every blueprint is registered."""
    app.extensions[EXTENSION] = index(app)


def of(app: Flask, name: str) -> RouteMeta:
    """The metadata of an /api/v1 endpoint."""
    meta: RouteMeta = app.extensions[EXTENSION][name]
    return meta


def current() -> RouteMeta | None:
    """The metadata of the route this request matched; None outside /api/v1 or when it
    matched no route (a 404 or 405 follows)."""
    routes: dict[str, RouteMeta] = current_app.extensions[EXTENSION]
    return routes.get(request.endpoint or "")
