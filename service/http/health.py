"""Liveness and readiness probes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis
from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("health", __name__)
_probe_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def _redis_ok(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """200 while the process runs."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """200 when Redis and the registry answer; 503 naming the one that does not."""
    svc = current_app.extensions["tagwarden"]
    redis_future = _probe_pool.submit(_redis_ok, svc.redis)
    registry_future = _probe_pool.submit(svc.registry.ping, 1.5)
    checks = {"redis": redis_future.result(), "registry": registry_future.result()}
    down = [name for name, ok in checks.items() if not ok]
    body = {
        "status": "ok" if not down else "unavailable",
        "checks": {name: "ok" if ok else "down" for name, ok in checks.items()},
    }
    if down:
        body["message"] = f"{' and '.join(down)} not answering"
        return jsonify(body), 503
    return jsonify(body)
