"""Forwarding to the registry: the upstream request rebuilt from what was parsed and
authorized (path, query, the headers meant to pass), the answer relayed back streaming."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, g, request

from service.core import governance
from service.http import clientaddr
from service.http.gunicorn_worker import lift_deadline
from service.registry.client import HOP_BY_HOP, RESPONSE_DROP, RegistryClient
from service.registry.routes import QUERY_PARAMS, BadRoute, V2Route
from service.services import Services

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


# Client headers the registry may see; the gateway sets Content-Length, Content-Type and the
# forwarding headers itself, and every other header (Forwarded, X-Forwarded-*, cookies, the
# token) stays here: the registry builds Location from `Forwarded`, for one.
REQUEST_PASS = frozenset({"accept", "accept-encoding", "range", "if-range", "if-match",
                          "if-none-match", "if-modified-since", "user-agent"})


REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "authorization", "expect",
                             "x-tagwarden-blob-accel"}


BODY_METHODS = ("POST", "PUT", "PATCH")


DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def registry_error(status: int, code: str, message: str, detail: Any = None) -> Response:
    """A response in the registry's own error envelope."""
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]})
    resp = Response(body, status=status, content_type="application/json; charset=utf-8")
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    return resp


def current_services() -> Services:
    return current_app.extensions["tagwarden"]


def registry_client() -> RegistryClient:
    return current_services().registry


def actor_name() -> str | None:
    return g.get("actor_name")


HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
                     r"(?::[0-9]{1,5})?$")


def public_origin() -> str:
    """The origin clients use to reach the gateway: TAGWARDEN_PUBLIC_URL, else (only when
    TAGWARDEN_TRUST_FORWARDED is on) X-Forwarded-Proto/Host, else the Host header."""
    settings = current_services().settings
    if settings.public_url:
        return settings.public_url
    proto, host = request.scheme, request.host
    if settings.trust_forwarded:
        proto = request.headers.get("X-Forwarded-Proto", proto).split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    if proto not in ("http", "https") or not HOST_RE.match(host):
        raise BadRoute("UNSUPPORTED", "invalid Host or X-Forwarded-Host/Proto header",
                       {"host": host[:100]})
    return f"{proto}://{host}"


def upstream_headers(origin: str) -> dict[str, str]:
    """Client headers minus hop-by-hop ones, plus forwarding headers naming our origin, the
    client address we trust and the caller's token name.

    The registry reports the first X-Forwarded-For entry (else X-Real-Ip) as its events'
    `request.addr` and builds Location from `Forwarded`: only the gateway writes those. With
    no auth of its own it reports the Basic user name as `actor.name`: the token's name
    (never its secret) goes there."""
    headers = {k: v for k, v in request.headers.items()
               if k.lower() in REQUEST_PASS and k.lower() not in REQUEST_DROP}
    proto, _, host = origin.partition("://")
    headers["X-Forwarded-Proto"] = proto
    headers["X-Forwarded-Host"] = host
    headers["X-Forwarded-For"] = clientaddr.forwarded_for(
        request.environ, current_services().settings.trust_forwarded)
    if actor := actor_name():
        headers["Authorization"] = "Basic " + base64.b64encode(f"{actor}:".encode()).decode()
    request_id = request.environ.get("tagwarden.request_id")
    if request_id:
        headers["X-Request-ID"] = request_id
    return headers


def _request_body() -> tuple[Any, bool, int | None]:
    """(body, chunked, length): the client body as a stream, never read whole; none for the
    methods whose body the registry ignores."""
    if request.method not in BODY_METHODS:
        return None, False, None
    length = request.content_length
    if length:
        lift_deadline(request.environ)  # a layer may take long; the idle timeout still holds
    if length is not None:
        return (request.stream if length else None), False, length
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        lift_deadline(request.environ)
        return request.stream, True, None
    return None, False, None


def relayed_headers(upstream: Any, origin: str | None) -> list[tuple[str, str]]:
    """Upstream headers minus hop-by-hop ones, Location pointed at the gateway's origin."""
    upstream_origin = registry_client().origin
    headers = []
    for key, value in upstream.headers.items():
        lower = key.lower()
        if lower in RESPONSE_DROP:
            continue
        if origin and lower == "location" and value.startswith(upstream_origin):
            value = origin + value[len(upstream_origin) :]
        headers.append((key, value))
    return headers


def with_headers(resp: Response, headers: list[tuple[str, str]]) -> Response:
    resp.headers.clear()  # exactly the upstream's headers (no default Content-Type)
    for key, value in headers:
        resp.headers.add(key, value)
    return resp


def relay(upstream: Any, origin: str, head: bool = False) -> Response:
    """Turn an upstream urllib3 response into a streamed Flask response."""
    headers = relayed_headers(upstream, origin)
    chunk = current_services().settings.proxy_chunk_size

    def body() -> Iterator[bytes]:
        try:
            while True:
                data = upstream.read(chunk)
                if not data:
                    break
                yield data
        finally:
            upstream.release_conn()

    if head or upstream.status in (204, 304):
        upstream.release_conn()
        return with_headers(Response(status=upstream.status), headers)
    return with_headers(Response(body(), status=upstream.status, direct_passthrough=True),
                         headers)


def relay_buffered(upstream: Any, origin: str | None = None) -> Response:
    """Relay a small, already-read upstream response."""
    return with_headers(Response(upstream.data, status=upstream.status),
                         relayed_headers(upstream, origin))


def upstream_target(route: V2Route, state: str | None = None,
                    mount_from: str | None = None) -> str:
    """The upstream path and query, rebuilt from what was parsed and authorized: the
    canonical path, and only the query parameters the registry reads for that route (their
    first values, as authorization read them). A mount needs both `mount` and `from`;
    `state` replaces an upload's `_state` with the latest one the registry issued;
    `mount_from` is the source the gateway found (and authorized) for a mount without one."""
    args = {k: request.args.get(k) for k in QUERY_PARAMS.get(route.kind, ())}
    if state is not None:
        args["_state"] = state
    if mount_from is not None:
        args["from"] = mount_from
    if not (args.get("mount") and args.get("from")):
        args.pop("mount", None)
        args.pop("from", None)
    query = urlencode([(k, v) for k, v in args.items() if v is not None])
    return "/v2/" + route.path + (f"?{query}" if query else "")


class CountingReader:
    """A request body passed upstream, counting the bytes it gave."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        """Read from the client, counting."""
        data = self.stream.read(size)
        self.count += len(data)
        return data


def send(route: V2Route, state: str | None = None, mount_from: str | None = None
         ) -> tuple[Any, str, CountingReader | None]:
    """Send the request to the registry as authorized, the body streamed: (the upstream
    answer, the public origin, the counted body or None)."""
    origin = public_origin()
    headers = upstream_headers(origin)
    body, chunked, length = _request_body()
    if length is not None:
        headers["Content-Length"] = str(length)
    if body is not None:  # never a form: distribution would read parameters out of it
        headers["Content-Type"] = "application/octet-stream"
        body = CountingReader(body)
    if request.method in ("GET", "HEAD") and body is None:
        upstream = registry_client().read(request.method, upstream_target(route, state,
                                                                          mount_from),
                                          headers=headers, stream=True)
    else:
        upstream = registry_client().request(
            request.method, upstream_target(route, state, mount_from), headers=headers,
            body=body, chunked=chunked
        )
    if route.kind == "upload" and "mount" in request.args:
        governance.record_mount(current_services(), route.name,
                                mount_from or request.args.get("from"),
                                request.args.get("mount"), upstream.status, actor_name(),
                                g.get("actor_id"))
    return upstream, origin, body


def forward(route: V2Route) -> Response:
    """Pass the request through to the registry as authorized, streaming both ways."""
    upstream, origin, _ = send(route)
    return relay(upstream, origin, head=request.method == "HEAD")
