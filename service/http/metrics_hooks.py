"""Request metrics from the Flask side: counting and timing every request, the bytes through
the /v2 proxy, promotion outcomes (from the route's `metric` label), and GET /metrics.

The metric objects and the scrape are service/obs/metrics.py (no Flask there: the workers
record metrics too).
"""

from __future__ import annotations

import time

from flask import Flask, Response, request

from service.http.api import meta as api_meta
from service.http.bodies import peek_json
from service.obs import metrics
from service.services import Services

START_KEY = "tagwarden.metrics_start"


def _is_proxy() -> bool:
    return request.path == "/v2" or request.path.startswith("/v2/")


def _start() -> None:
    request.environ[START_KEY] = time.perf_counter()
    if _is_proxy() and "wsgi.input" in request.environ:
        request.environ["wsgi.input"] = metrics.CountingStream(request.environ["wsgi.input"])


def _finish(resp: Response) -> Response:
    started = request.environ.get(START_KEY)
    route = request.url_rule.rule if request.url_rule else "unmatched"
    metrics.http_request(request.method, route, resp.status_code,
                         None if started is None else time.perf_counter() - started)
    if _is_proxy() and resp.response is not None and hasattr(resp.response, "filelike"):
        pass  # a file sent with sendfile (http/v2/local_pulls): counted there, never wrapped
    elif _is_proxy() and resp.response is not None and not resp.is_sequence:
        resp.response = metrics.CountingBody(resp.response)
    elif _is_proxy() and resp.is_sequence:
        metrics.proxy_bytes_out(sum(len(chunk) for chunk in resp.response))
    meta = api_meta.current()
    if meta is not None and meta.metric is not None:
        body = peek_json()
        env = body.get("environment") if isinstance(body, dict) else None
        metrics.promotion(meta.metric, env if isinstance(env, str) else None,
                          metrics.promotion_outcome(resp.status_code))
    return resp


def install(app: Flask, svc: Services) -> None:
    """GET /metrics, and request counting and timing on every request."""

    def metrics_view() -> Response:
        """Prometheus text format."""
        return Response(metrics.scrape(svc), content_type=metrics.CONTENT_TYPE)

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
    # first of the before_request hooks: the time includes authentication and rate limits
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
