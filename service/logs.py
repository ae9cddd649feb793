"""Structured request logs and request ids."""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from typing import Any

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any `extra` fields merged in."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        body.update(getattr(record, "fields", {}))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def setup_logging(fmt: str) -> None:
    """Configure the tagwarden logger tree for json or text output."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("tagwarden")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _valid_request_id(value: str | None) -> bool:
    return bool(value) and len(value) <= 128 and value.isascii() and value.isprintable()


def configure(app: Flask, fmt: str) -> None:
    """Request id in and out, one access log line per request."""
    setup_logging(fmt)
    access = logging.getLogger("tagwarden.access")

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER)
        rid = incoming if _valid_request_id(incoming) else uuid.uuid4().hex
        request.environ["tagwarden.request_id"] = rid
        g.started = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = request.environ.get("tagwarden.request_id", "")
        resp.headers[REQUEST_ID_HEADER] = rid
        duration = time.perf_counter() - g.get("started", time.perf_counter())
        fields = {
            "request_id": rid,
            "method": request.method,
            "path": request.path,
            "route": request.url_rule.rule if request.url_rule else None,
            "status": resp.status_code,
            "duration_ms": round(duration * 1000, 2),
            "actor": g.get("actor_name"),
        }
        access.info("%s %s %s", request.method, request.path, resp.status_code,
                    extra={"fields": fields})
        return resp
