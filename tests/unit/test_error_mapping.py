"""Exceptions carry meaning, not HTTP: the one table in service/http/errors.py maps each to a
status and an envelope code (issue 16)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from flask import Flask

import service
from service.config import Settings
from service.core import backup, webhooks
from service.domain import errors as domain
from service.domain.policy_model import Decision, Violation
from service.http import errors
from service.http.app import create_app
from service.http.security import RateLimited
from service.registry.routes import BadRoute


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_domain_error_is_in_the_table():
    """Each DomainError subclass of service/ is named itself, not only through a base class
    (a new exception decides its status and code where the others are)."""
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if not module.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(module.name)
    defined = {cls for cls in _subclasses(domain.DomainError)
               if cls.__module__.startswith("service.")}
    assert len(defined) >= 15
    assert sorted(c.__qualname__ for c in defined - set(errors.ERRORS)) == []


def test_no_domain_error_carries_an_http_status():
    for cls in {domain.DomainError, *_subclasses(domain.DomainError)}:
        assert not {"status", "code"} & set(vars(cls)), cls


DENIED = Decision(False, "team", (Violation("push.denied", "no", "team"),))


@pytest.mark.parametrize(("exc", "status", "code"), [
    (domain.DomainError("x"), 400, "invalid_request"),
    (domain.InvalidRequest("x"), 400, "invalid_request"),
    (domain.Unprocessable("x"), 422, "invalid_request"),
    (domain.NotFound("x"), 404, "not_found"),
    (domain.Conflict("x"), 409, "conflict"),
    (domain.IdempotencyMismatch("x"), 422, "idempotency_mismatch"),
    (domain.Unauthorized("x"), 401, "unauthorized"),
    (domain.Forbidden("x"), 403, "forbidden"),
    (domain.PolicyDenied("x", DENIED), 403, "policy_denied"),
    (domain.RegistryUnavailable("x"), 502, "registry_unavailable"),
    (domain.RegistryUnavailable("x", reachable=False), 503, "registry_unavailable"),
    (domain.Busy("x"), 429, "busy"),
    (domain.StoreUnavailable("x"), 503, "store_unavailable"),
    (RateLimited("x"), 429, "rate_limited"),
    (backup.PayloadTooLarge("x"), 413, "payload_too_large"),
    (webhooks.PayloadTooLarge("x"), 413, "payload_too_large"),
    (webhooks.UnsupportedMediaType("x"), 415, "unsupported_media_type"),
    (BadRoute("NAME_INVALID", "x", None), 400, "invalid_request"),
    (BadRoute("MANIFEST_UNKNOWN", "x", None), 404, "invalid_request"),
])
def test_status_and_code(exc: domain.DomainError, status: int, code: str):
    assert errors.status_and_code(exc) == (status, code)


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(Settings(redis_url="redis://127.0.0.1:9/0"))


@pytest.mark.parametrize(("code", "status"), [
    ("NAME_UNKNOWN", 404), ("MANIFEST_UNKNOWN", 404), ("BLOB_UNKNOWN", 404),
    ("BLOB_UPLOAD_UNKNOWN", 404), ("NAME_INVALID", 400), ("DIGEST_INVALID", 400),
    ("TAG_INVALID", 400), ("UNSUPPORTED", 400), ("PAGINATION_NUMBER_INVALID", 400)])
def test_a_bad_v2_route_answers_in_the_registry_envelope(app: Flask, code: str, status: int):
    with app.test_request_context("/v2/a/b/manifests/x"):
        resp = errors.handle_domain(BadRoute(code, "nope", {"reference": "x"}))
    assert resp.status_code == status
    assert resp.get_json() == {"errors": [{"code": code, "message": "nope",
                                           "detail": {"reference": "x"}}]}


def test_the_api_envelope_takes_the_code_from_the_table(app: Flask):
    with app.test_request_context("/api/v1/promotions"):
        denied = errors.handle_domain(domain.PolicyDenied("no", DENIED))
        busy = errors.handle_domain(domain.Busy("later", retry_after=3))
        unreachable = errors.handle_domain(domain.RegistryUnavailable("down", reachable=False))
    assert (denied.status_code, denied.get_json()["code"]) == (403, "policy_denied")
    assert denied.get_json()["violations"][0]["rule"] == "push.denied"
    assert (busy.status_code, busy.headers["Retry-After"]) == (429, "3")
    assert unreachable.get_json() == {"code": "registry_unavailable", "message": "down"}
    assert unreachable.status_code == 503
