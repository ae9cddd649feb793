"""The one place that maps exceptions to HTTP statuses and error envelopes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from service.core import backup, webhooks
from service.domain import errors as domain
from service.http.schemas.common import flatten_errors
from service.http.security import RateLimited
from service.http.v2.forwarding import registry_error
from service.registry.routes import BadRoute
from service.store import NotReplicated

log = logging.getLogger("tagwarden.errors")

# the registry protocol's codes of a missing thing (its 404s)
UNKNOWN_CODES = frozenset({"NAME_UNKNOWN", "MANIFEST_UNKNOWN", "BLOB_UNKNOWN",
                           "BLOB_UPLOAD_UNKNOWN"})
# The one table: exception → (status, the /api/v1 envelope's code). The most specific class of
# the exception found here decides; a status given as a function reads the attributes that
# carry meaning. A unit test fails on a DomainError subclass missing here.
Status = int | Callable[[Any], int]
ERRORS: dict[type[Exception], tuple[Status, str]] = {
    domain.DomainError: (400, "invalid_request"),
    domain.InvalidRequest: (400, "invalid_request"),
    domain.Unprocessable: (422, "invalid_request"),
    domain.NotFound: (404, "not_found"),
    domain.Conflict: (409, "conflict"),
    domain.IdempotencyMismatch: (422, "idempotency_mismatch"),
    domain.Unauthorized: (401, "unauthorized"),
    domain.Forbidden: (403, "forbidden"),
    domain.PolicyDenied: (403, "policy_denied"),
    domain.RegistryUnavailable: (lambda exc: 502 if exc.reachable else 503,
                                 "registry_unavailable"),
    domain.Busy: (429, "busy"),
    domain.StoreUnavailable: (503, "store_unavailable"),
    BadRoute: (lambda exc: 404 if exc.registry_code in UNKNOWN_CODES else 400,
               "invalid_request"),
    RateLimited: (429, "rate_limited"),
    backup.PayloadTooLarge: (413, "payload_too_large"),
    webhooks.PayloadTooLarge: (413, "payload_too_large"),
    webhooks.UnsupportedMediaType: (415, "unsupported_media_type"),
}
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal_error",
    502: "registry_unavailable",
    503: "unavailable",
}
REGISTRY_CODES = {
    400: "UNSUPPORTED",
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "NAME_UNKNOWN",
    405: "UNSUPPORTED",
    409: "UNSUPPORTED",
    413: "SIZE_INVALID",
    429: "TOOMANYREQUESTS",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}


def status_and_code(exc: domain.DomainError) -> tuple[int, str]:
    """The status and envelope code of a domain exception, from ERRORS."""
    cls = next(c for c in type(exc).__mro__ if c in ERRORS)  # DomainError itself is there
    status, code = ERRORS[cls]
    return (status if isinstance(status, int) else status(exc)), code


def _is_registry_path() -> bool:
    return request.path == "/v2" or request.path.startswith("/v2/")


def api_error(status: int, code: str, message: str, **extra: Any) -> Response:
    """The /api/v1 error envelope: {code, message, errors?, violations?}."""
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    resp = jsonify(body)
    resp.status_code = status
    return resp


def handle_domain(exc: domain.DomainError) -> Response:
    """Domain exception → status and envelope for the path's API family."""
    status, code = status_and_code(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc.message)
    decision = getattr(exc, "decision", None)
    violations = decision.to_dict()["violations"] if decision is not None else None
    resp = _domain_response(exc, status, code, violations)
    resp.headers.update(getattr(exc, "extra", {}).get("headers") or {})  # Retry-After on 429s
    if isinstance(exc, domain.Busy):
        resp.headers["Retry-After"] = str(exc.retry_after)
    return resp


def _domain_response(exc: domain.DomainError, status: int, api_code: str, violations: Any
                     ) -> Response:
    if _is_registry_path():
        code = "DENIED" if isinstance(exc, domain.PolicyDenied) else REGISTRY_CODES.get(
            status, "UNKNOWN"
        )
        code = getattr(exc, "registry_code", None) or code
        detail = {"violations": violations} if violations is not None else getattr(
            exc, "detail", None)
        resp = registry_error(status, code, exc.message, detail)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="tagwarden"'
        return resp
    errors = getattr(exc, "errors", None) or None
    resp = api_error(status, api_code, exc.message, errors=errors, violations=violations)
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="tagwarden"'
    return resp


def handle_http(exc: HTTPException) -> Response:
    """Werkzeug/smorest HTTP errors in our envelopes (never HTML)."""
    status = exc.code or 500
    message = exc.description or exc.name
    if _is_registry_path():
        return registry_error(status, REGISTRY_CODES.get(status, "UNKNOWN"), message)
    data = getattr(exc, "data", None) or {}
    errors = None
    if "json" in (data.get("messages") or {}) and not request.is_json and request.get_data(
            cache=True):
        sent = request.mimetype or "no Content-Type"
        message = (f"the body was not read as JSON (it was sent with {sent}); send it with "
                   "Content-Type: application/json")
        return api_error(415, "unsupported_media_type", message, errors={"body": [message]})
    if "messages" in data:
        messages = data["messages"]
        # webargs nests by location ("json", "query"); the field path is what users need.
        if isinstance(messages, dict) and set(messages) <= {"json", "query", "headers", "form"}:
            merged: dict[str, Any] = {}
            for location, part in messages.items():
                if isinstance(part, dict):
                    merged.update(part)
                else:
                    merged.setdefault("body" if location == "json" else location, part)
            messages = merged
        errors = flatten_errors(messages)
        fields = ", ".join(sorted(errors))
        message = f"invalid request: {fields}" if fields else message
    resp = api_error(status, HTTP_CODES.get(status, "error"), message, errors=errors)
    if status == 405:
        for name, value in exc.get_headers():
            if name.lower() == "allow":
                resp.headers["Allow"] = value
    return resp


def handle_redis(exc: redis.RedisError) -> Response:
    """Redis down or timing out: a quick 503, without internals."""
    log.warning("redis error: %s", type(exc).__name__)
    message = "state store (Redis) unavailable"
    if isinstance(exc, NotReplicated):  # its text says how many replicas answered
        message = (f"the state store's replicas did not acknowledge the write in time ({exc}); "
                   "nothing was changed")
    if _is_registry_path():
        return registry_error(503, "UNAVAILABLE", message)
    return api_error(503, "store_unavailable", message)


def handle_recursion(exc: RecursionError) -> Response:
    """JSON nested deeper than Python can parse: the client's input, not a server fault."""
    message = "input is nested too deeply"
    if _is_registry_path():
        return registry_error(400, "MANIFEST_INVALID", message)
    return api_error(400, "invalid_request", message, errors={"body": [message]})


def handle_unexpected(exc: Exception) -> Response:
    """Anything else: log it, answer 500 without a stack trace."""
    if isinstance(exc, HTTPException):
        return handle_http(exc)
    log.exception("unhandled error on %s %s", request.method, request.path)
    if _is_registry_path():
        return registry_error(500, "UNKNOWN", "internal error")
    return api_error(500, "internal_error", "internal error")


def register_error_handlers(app: Flask) -> None:
    """Install every mapping above on the app."""
    app.register_error_handler(domain.DomainError, handle_domain)
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(redis.ConnectionError, handle_redis)
    app.register_error_handler(redis.TimeoutError, handle_redis)
    app.register_error_handler(RecursionError, handle_recursion)
    app.register_error_handler(Exception, handle_unexpected)
