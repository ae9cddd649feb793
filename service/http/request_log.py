"""The gateway's request hooks: a request id in and out (X-Request-ID) and one access log
line per request (the formats are service.obs.logs')."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

from service.http.clientaddr import client_address
from service.obs.logs import ENVIRON_KEY, REQUEST_ID_HEADER, setup_logging, valid_request_id


def configure(app: Flask, fmt: str, trust_forwarded: bool = False) -> None:
    """Request id in and out, one access log line per request (naming the client address
    as service.http.clientaddr trusts it)."""
    setup_logging(fmt, batched=True)
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
        if access.isEnabledFor(logging.INFO):  # a record without Logger.info's stack walk
            access.handle(access.makeRecord(
                access.name, logging.INFO, __file__, 0, "%s %s %s",
                (request.method, request.path, resp.status_code), None,
                extra={"fields": fields}))
        return resp
