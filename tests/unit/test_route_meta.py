"""Route metadata lives on the route (`@endpoint(...)`, service/http/api/meta.py): every
/api/v1 route carries it, and an app with a route that does not is never built."""

from __future__ import annotations

import pytest
from flask import Flask
from flask_smorest import Blueprint

from service.config import Settings
from service.http import app as app_module
from service.http.api import meta
from service.http.app import create_app

NOWHERE = "redis://127.0.0.1:9/0"  # nothing listens: building the app does no I/O


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(Settings(redis_url=NOWHERE))


def test_every_api_route_has_its_metadata(app: Flask):
    """The index holds each /api/v1 endpoint, read from its view function."""
    api = {rule.endpoint for rule in app.url_map.iter_rules()
           if rule.rule.startswith(meta.API_PREFIX)}
    index = app.extensions[meta.EXTENSION]
    assert set(index) == api and len(api) > 30
    for endpoint in api:
        assert getattr(app.view_functions[endpoint], meta.ATTRIBUTE) is index[endpoint]


def test_the_decorator_survives_smorest_and_states_what_the_tables_did(app: Flask):
    """A few routes, spot-checked against what the five endpoint-keyed tables said."""
    assert meta.of(app, "promotions.create_promotion") == meta.RouteMeta(
        "ci", "repository+environment", audit="promotion.create", metric="promotion",
        idempotent=True, errors=(400, 404, 409, 502), waits_for_replicas=True)
    assert meta.of(app, "promotions.create_rollback").waits_for_replicas
    assert not meta.of(app, "tokens.create_token").waits_for_replicas
    assert meta.of(app, "backup.restore") == meta.RouteMeta(
        "admin", "", audit="backup.restore", body="stream")
    assert meta.of(app, "scans.import_vulndb").body == "upload"
    assert meta.of(app, "events.registry_webhook") == meta.RouteMeta(
        None, "", rate=None, errors=(400, 401, 413, 415, 503))
    assert meta.of(app, "tokens.list_tokens").role == "admin"
    assert meta.of(app, "promotions.list_promotions") == meta.RouteMeta("reader", "repository")


def test_an_api_route_without_metadata_stops_the_app(monkeypatch: pytest.MonkeyPatch):
    """No default: create_app raises, naming the route."""
    stray = Blueprint("stray", __name__, url_prefix="/api/v1")

    @stray.route("/stray", methods=["POST"])
    @stray.response(204)
    def forgotten() -> None:
        """A route whose author forgot @endpoint."""

    @stray.route("/fine", methods=["GET"])
    @meta.endpoint(role="reader", scope="repository")
    @stray.response(204)
    def fine() -> None:
        """A route with its metadata."""

    blueprints = app_module.api_blueprints()
    monkeypatch.setattr(app_module, "api_blueprints", lambda: [*blueprints, stray])
    with pytest.raises(meta.MissingRouteMetadata) as raised:
        create_app(Settings(redis_url=NOWHERE))
    assert str(raised.value) == ("routes without @endpoint(...) metadata: "
                                 "/api/v1/stray (stray.forgotten)")


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"role": "root", "scope": ""}, "role 'root'"),
    ({"role": "ci", "scope": "repo"}, "scope 'repo'"),
    ({"role": "ci", "scope": "", "body": "xml"}, "body 'xml'"),
    ({"role": "ci", "scope": "", "metric": "deploy"}, "metric 'deploy'"),
    ({"role": None, "scope": "repository", "rate": None}, "authenticates itself"),
    ({"role": None, "scope": ""}, "authenticates itself"),  # rate defaults to "api"
])
def test_metadata_is_checked_when_declared(kwargs: dict, problem: str):
    with pytest.raises(ValueError, match="invalid route metadata: .*" + problem):
        meta.endpoint(**kwargs)
