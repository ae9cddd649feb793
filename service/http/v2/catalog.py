"""GET /v2/_catalog answered by the gateway: the registry's catalog, cut to the caller's scopes.

The registry lists every repository; a token scoped to `team-a/*` must only learn of those its
globs cover. So the gateway reads the registry's catalog itself (pages of up to 1000, following
its Link), keeps what the caller covers and pages the result with the client's `n` and `last`:
a page is full unless the catalog ends, and its `Link` names the last repository shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from flask import Response, request

from service.domain.errors import RegistryUnavailable
from service.registry.client import RegistryClient
from service.registry.routes import BadRoute

log = logging.getLogger("tagwarden.catalog")

DEFAULT_N = 100  # distribution 2.8's page when `n` is absent
MAX_N = 1000
UPSTREAM_N = 1000
MAX_UPSTREAM_PAGES = 1000  # a million repositories; past that the answer ends there
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


def _upstream_next(link: str | None, repositories: list[str]) -> str | None:
    """The `last` of the registry's next page (from its Link), None when this was the last."""
    if not link or not repositories:
        return None
    target = link.partition("<")[2].partition(">")[0]
    values = parse_qs(urlsplit(target).query).get("last")
    return values[0] if values else repositories[-1]


def scan(client: RegistryClient, last: str, wanted: int, keep: Callable[[str], bool]
          ) -> list[str]:
    """Up to `wanted` repositories after `last` that `keep` accepts, in catalog order."""
    found: list[str] = []
    cursor: str | None = last
    for _ in range(MAX_UPSTREAM_PAGES):
        query = urlencode({"n": UPSTREAM_N, **({"last": cursor} if cursor else {})})
        upstream = client.request("GET", f"/v2/_catalog?{query}",
                                  headers={"Accept": "application/json"}, stream=False)
        try:
            repositories = [r for r in json.loads(upstream.data).get("repositories") or []
                            if isinstance(r, str)] if upstream.status == 200 else None
        except (ValueError, AttributeError):
            repositories = None
        if repositories is None:
            raise RegistryUnavailable(f"registry answered {upstream.status} to GET /v2/_catalog "
                                      "without a repository list")
        found.extend(r for r in repositories if keep(r))
        if len(found) >= wanted:
            return found[:wanted]
        cursor = _upstream_next(upstream.headers.get("Link"), repositories)
        if cursor is None:
            return found
    log.warning("catalog cut after %d registry pages", MAX_UPSTREAM_PAGES)
    return found


def answer(client: RegistryClient, keep: Callable[[str], bool] | None) -> Response:
    """The catalog page the client asked for (`n`, `last`), of the repositories `keep` accepts."""
    raw_n, last = request.args.get("n"), request.args.get("last") or ""
    if raw_n is not None and not (raw_n.isascii() and raw_n.isdigit()):
        raise BadRoute(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested",
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
