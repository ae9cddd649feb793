"""The only code that knows Redis keys: names, serialisation, pipelines, transactions."""

from __future__ import annotations

import redis

PREFIX = "tw:"


# How long one Redis command may take before the caller gets a 503 (store_unavailable).
TIMEOUT = 2.0


def connect(url: str, *, decode: bool = True, timeout: float = TIMEOUT) -> redis.Redis:
    """A Redis client that fails fast (a quick 503 beats a hang)."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 1.0),
        health_check_interval=15,
        retry_on_timeout=False,
    )


def key(*parts: str) -> str:
    """Build a namespaced key; only modules of service.store call this."""
    return PREFIX + ":".join(parts)
