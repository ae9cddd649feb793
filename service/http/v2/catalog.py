"""GET /v2/_catalog answered by the gateway: a page of the registry's catalog cut to the
caller's scopes (service.core.catalog), paged with the client's `n` and `last`."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

from flask import Response, request

from service.core.catalog import DEFAULT_N, MAX_N, scan
from service.registry.client import RegistryClient
from service.registry.routes import BadRoute

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def answer(client: RegistryClient, keep: Callable[[str], bool] | None) -> Response:
    """The catalog page the client asked for (`n`, `last`), of the repositories `keep` accepts."""
    raw_n, last = request.args.get("n"), request.args.get("last") or ""
    if raw_n is not None and not (raw_n.isascii() and raw_n.isdigit()):
        raise BadRoute("PAGINATION_NUMBER_INVALID", "invalid number of results requested",
                       {"n": raw_n[:20]})
    # a thousand-digit `n` is just "as many as allowed" (int() refuses past 4300 digits)
    n = DEFAULT_N if raw_n is None else MAX_N if len(raw_n) > 6 else min(int(raw_n), MAX_N)
    found = scan(client, last, n + 1, keep or (lambda _: True)) if n else []
    page = found[:n]
    body = b"" if request.method == "HEAD" else json.dumps({"repositories": page}).encode()
    resp = Response(body, status=200, content_type="application/json; charset=utf-8")
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    if len(found) > n:
        resp.headers["Link"] = f'</v2/_catalog?n={n}&last={quote(page[-1], safe="/")}>; rel="next"'
    return resp
