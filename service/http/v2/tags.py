"""Tags: /tags/list answered the way the OCI spec says (sorted, `n`, `last`, Link)."""

from __future__ import annotations

import json

from flask import Response, request

from service.http.v2.forwarding import (
    API_VERSION,
    public_origin,
    registry_client,
    registry_error,
    relay_buffered,
    upstream_headers,
)


def tags_list(name: str) -> Response:
    """Answer /tags/list the way the OCI spec says: sorted, `n`, `last`, and a Link header."""
    raw_n = request.args.get("n")
    last = request.args.get("last")
    n: int | None = None
    if raw_n is not None:
        if not (raw_n.isascii() and raw_n.isdigit()):
            return registry_error(
                400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested",
                {"n": raw_n},
            )
        n = int(raw_n[:12])  # more than any repository holds; int() of 5,000 digits raises
    upstream = registry_client().read(
        "GET", f"/v2/{name}/tags/list", headers=upstream_headers(public_origin())
    )
    if upstream.status != 200:
        return relay_buffered(upstream)
    tags = sorted(json.loads(upstream.data).get("tags") or [])
    if last:
        tags = [t for t in tags if t > last]
    page, more = (tags, False) if n is None else (tags[:n], len(tags) > n)
    resp = Response(
        json.dumps({"name": name, "tags": page}), status=200, content_type="application/json"
    )
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    if more and page:
        resp.headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={page[-1]}>; rel="next"'
    return resp
