"""The application factory."""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from flask import Flask
from flask_smorest import Api, Blueprint

from service.config import ConfigError, Settings
from service.domain.errors import InvalidRequest
from service.domain.schemas.policy import load_policy_file
from service.http import durability, metrics_hooks, openapi, security
from service.http.api import meta as api_meta
from service.http.errors import register_error_handlers
from service.http.health import bp as health_bp
from service.http.request_log import configure as configure_request_log
from service.http.v2 import proxy
from service.http.webhook_fastpath import WebhookFastPath
from service.obs import metrics
from service.services import Services

log = logging.getLogger("tagwarden.app")

API_SPEC = {
    "API_TITLE": "Tagwarden",
    "API_VERSION": "v1",
    "OPENAPI_VERSION": "3.1.0",
    "OPENAPI_URL_PREFIX": None,
}


def _settings(config: Any) -> Settings:
    if config is None:
        return Settings.from_env()
    if isinstance(config, Settings):
        return config
    return Settings.from_mapping(dict(config))


def api_blueprints() -> list[Blueprint]:
    """Every /api/v1 blueprint, in the order the spec lists them."""
    from service.http.api import (
        approvals,
        backup,
        bindings,
        events,
        policies,
        promotions,
        retention,
        scans,
        timeline,
        tokens,
    )

    return [policies.blp, promotions.blp, scans.blp, events.blp, tokens.blp, bindings.blp,
            approvals.blp, retention.blp, backup.blp, timeline.blp]


def seed_policies(app: Flask, svc: Services) -> None:
    """Load TAGWARDEN_POLICY_FILE (a bad file stops the process); store it now or on the
    first request if Redis is not up yet."""
    path = svc.settings.policy_file
    if not path:
        return
    try:
        policies = load_policy_file(path)
    except InvalidRequest as exc:
        details = "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.errors.items())
        raise ConfigError(f"TAGWARDEN_POLICY_FILE: {exc.message} {details}".strip()) from None
    try:
        svc.policies.seed(policies)
        return
    except redis.RedisError:
        log.warning("redis not reachable; policies from %s will be stored later", path)

    @app.before_request
    def _seed_late() -> None:
        if not app.extensions.get("policies_seeded"):
            svc.policies.seed(policies)
            app.extensions["policies_seeded"] = True


def _keep_tokens_warm(app: Flask, svc: Services) -> None:
    """Keep a copy of the token table in this process (verifiable while Redis is down), from
    the first request on: a process that serves nothing (`tagwarden openapi`) starts no
    thread and never touches Redis."""
    started = threading.Lock()

    @app.before_request
    def _warm() -> None:
        if not started.locked() and started.acquire(blocking=False):
            svc.tokens.keep_warm()


def create_app(config: Any = None) -> Flask:
    """Build the gateway: settings validated, clients in app.extensions, blueprints mounted."""
    settings = _settings(config)
    app = Flask(__name__)
    app.config.update(API_SPEC)
    app.config["MAX_CONTENT_LENGTH"] = None  # /v2 bodies are streamed; API limits per route
    configure_request_log(app, settings.log_format, settings.trust_forwarded)
    svc = Services.build(settings)
    app.extensions["tagwarden"] = svc
    if svc.breaker is not None:
        app.before_request(svc.breaker.new_request)  # before any hook that calls Redis
    if settings.auth_stale_ttl:
        _keep_tokens_warm(app, svc)
    seed_policies(app, svc)
    api = Api(app)
    app.extensions["api"] = api
    register_error_handlers(app)
    security.install(app, svc)
    app.register_blueprint(health_bp)
    app.register_blueprint(proxy.bp)
    for blueprint in api_blueprints():
        api.register_blueprint(blueprint)
    api_meta.install(app)  # every /api/v1 route's metadata; fails on a route without any
    openapi.install(app, svc)
    metrics_hooks.install(app, svc)
    durability.install(app, svc)
    svc.pulls.on_drop = metrics.pull_event_dropped
    app.wsgi_app = WebhookFastPath(app.wsgi_app, svc)  # type: ignore[method-assign]
    return app


def openapi_yaml() -> str:
    """openapi.yaml's text, from an app built with default settings (no I/O happens)."""
    return openapi.to_yaml(openapi.build_spec(create_app(Settings())))
