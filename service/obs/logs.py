"""Structured request logs and request ids (in the gateway, and carried into RQ jobs).

Flask is imported only where a request is handled, so that RQ workers, which import this
module through service.core.jobs, still never import Flask.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Response

REQUEST_ID_HEADER = "X-Request-ID"
ENVIRON_KEY = "tagwarden.request_id"
JOB_META_KEY = "request_id"
# access-line fields shown by the text format after the message, in this order
TEXT_FIELDS = ("route", "duration_ms", "actor", "client", "request_id")


def current_request_id() -> str | None:
    """The id of the request being handled, or of the request that queued the running job."""
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        return flask.request.environ.get(ENVIRON_KEY)
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        value = job.meta.get(JOB_META_KEY)
        return value if isinstance(value, str) else None
    return None


def job_meta() -> dict[str, str]:
    """`meta` for queue.enqueue(): the current request id, so a job's logs can name it."""
    rid = current_request_id()
    return {JOB_META_KEY: rid} if rid else {}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record made while a request or a job is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if not (isinstance(fields, dict) and "request_id" in fields):
            try:
                record.request_id = current_request_id()
            except Exception:  # noqa: BLE001 - a log line must never fail for its context
                record.request_id = None
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", None) or {})
    rid = getattr(record, "request_id", None)
    if "request_id" not in fields and rid:
        fields["request_id"] = rid
    return fields


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
        body.update(_fields(record))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` for humans (TAGWARDEN_LOG_FORMAT=text)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        extra = []
        for key in TEXT_FIELDS:
            value = fields.get(key)
            if value is None:
                continue
            extra.append(f"{value}ms" if key == "duration_ms" else f"{key}={value}")
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {' '.join(extra)}{sep}{tail}"


def setup_logging(fmt: str) -> None:
    """Configure the tagwarden logger tree for json or text output."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger("tagwarden")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def valid_request_id(value: str | None) -> bool:
    return bool(value) and value is not None and len(value) <= 128 and value.isascii() \
        and value.isprintable()


def configure(app: Flask, fmt: str, trust_forwarded: bool = False) -> None:
    """Request id in and out, one access log line per request (naming the client address
    as service.http.clientaddr trusts it)."""
    from flask import g, request

    from service.http.clientaddr import client_address

    setup_logging(fmt)
    access = logging.getLogger("tagwarden.access")

    @app.before_request
    def _start() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER)
        rid = incoming if valid_request_id(incoming) else uuid.uuid4().hex
        request.environ[ENVIRON_KEY] = rid
        g.started = time.perf_counter()

    @app.after_request
    def _finish(resp: Response) -> Response:
        rid = request.environ.get(ENVIRON_KEY, "")
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
            "client": client_address(request.environ, trust_forwarded),
        }
        access.info("%s %s %s", request.method, request.path, resp.status_code,
                    extra={"fields": fields})
        return resp
