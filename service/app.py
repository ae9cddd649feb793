"""The application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask_smorest import Api
from rq import Queue

from service import logs, proxy, store
from service.config import Settings
from service.errors import register_error_handlers
from service.health import bp as health_bp
from service.registry.client import RegistryClient

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


def create_app(config: Any = None) -> Flask:
    """Build the gateway: settings validated, clients in app.extensions, blueprints mounted."""
    settings = _settings(config)
    app = Flask(__name__)
    app.config.update(API_SPEC)
    app.config["MAX_CONTENT_LENGTH"] = None  # /v2 bodies are streamed; API limits per route
    logs.configure(app, settings.log_format)
    redis_client = store.connect(settings.redis_url)
    rq_redis = store.connect(settings.redis_url, decode=False)
    app.extensions["settings"] = settings
    app.extensions["redis"] = redis_client
    app.extensions["rq_redis"] = rq_redis
    app.extensions["queue"] = Queue(settings.queue_name, connection=rq_redis)
    app.extensions["registry"] = RegistryClient(
        settings.registry_url,
        timeout=settings.registry_timeout,
        blocksize=settings.proxy_chunk_size,
    )
    api = Api(app)
    app.extensions["api"] = api
    register_error_handlers(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(proxy.bp)
    logging.getLogger("tagwarden").debug("gateway configured for %s", settings.registry_url)
    return app
