"""The registry's notifications, accepted without the Flask stack.

The registry posts one event per request, for every push and pull, so the receiver is the
gateway's hottest API route. An envelope that will be accepted (right token, a length within
the limit, a valid envelope) is handled here as plain WSGI: authenticate, read, dedupe and
queue (`webhooks.receive`, one Redis round trip), answer. Anything else — a wrong token, a body
too large or unreadable, Redis unavailable — is handed, body intact, to the Flask route
(`service.http.api.events.registry_webhook`), which owns every error answer, so there is one
implementation of the contract and this is only its fast lane.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from service.core import webhooks
from service.domain.errors import DomainError
from service.obs import logs, metrics
from service.services import Services

PATH = "/api/v1/webhooks/registry"


log = logging.getLogger("tagwarden.access")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WebhookFastPath:
    """WSGI middleware in front of the Flask app (see the module docstring)."""

    def __init__(self, app: WsgiApp, svc: Services) -> None:
        self.app = app
        self.svc = svc
        self.requests = metrics.REQUESTS.labels("POST", PATH, "200")
        self.latency = metrics.LATENCY.labels("POST", PATH, "200")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST"
                or self.svc.settings.redis_min_replicas):  # Flask's route waits for replicas
            return self.app(environ, start_response)
        started = time.perf_counter()
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or int(length) > self.svc.settings.webhook_max_bytes:
            return self.app(environ, start_response)  # chunked, missing or too large
        try:
            webhooks.authenticate(self.svc, environ.get("HTTP_AUTHORIZATION"))
        except DomainError:
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)  # the Flask route can read it again
        if len(body) != int(length):
            return self.app(environ, start_response)  # truncated: Flask reports it
        try:
            result = webhooks.receive(self.svc, environ.get("CONTENT_TYPE", ""), body)
        except Exception:  # noqa: BLE001 - the Flask route answers (and logs) every failure
            return self.app(environ, start_response)
        incoming = environ.get("HTTP_X_REQUEST_ID")
        rid = incoming if logs.valid_request_id(incoming) else uuid.uuid4().hex
        out = json.dumps(result).encode()
        start_response("200 OK", [
            ("Content-Type", "application/json"), ("Content-Length", str(len(out))),
            (logs.REQUEST_ID_HEADER, rid), ("X-Content-Type-Options", "nosniff"),
        ])
        duration = time.perf_counter() - started
        self.requests.inc()
        self.latency.observe(duration)
        if log.isEnabledFor(logging.DEBUG):  # one line per registry event is noise at INFO
            log.debug("POST %s 200", PATH, extra={"fields": {
                "request_id": rid, "method": "POST", "path": PATH, "route": PATH,
                "status": 200, "duration_ms": round(duration * 1000, 2), "actor": None}})
        return [out]
