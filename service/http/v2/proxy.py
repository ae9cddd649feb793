"""The /v2 blueprint: a streaming pass-through to the upstream registry, plus governance hooks."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, g, request

from service.core import governance, referrers, uploads
from service.domain.errors import Busy
from service.domain.policy import is_immutable
from service.http import clientaddr
from service.http.gunicorn_worker import lift_deadline
from service.http.v2 import catalog, local_pulls
from service.obs import metrics
from service.registry import routes
from service.registry.client import (
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    RegistryClient,
    sha256_digest,
)
from service.registry.limits import ManifestTooComplex, parse_cost, parse_manifest
from service.registry.routes import QUERY_PARAMS, BadRoute, V2Route
from service.services import Services
from service.store.tagmap import TagLock

bp = Blueprint("registry_proxy", __name__)

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Trailers",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Client headers the registry may see; the gateway sets Content-Length, Content-Type and the
# forwarding headers itself, and every other header (Forwarded, X-Forwarded-*, cookies, the
# token) stays here: the registry builds Location from `Forwarded`, for one.
REQUEST_PASS = frozenset({"accept", "accept-encoding", "range", "if-range", "if-match",
                          "if-none-match", "if-modified-since", "user-agent"})
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "authorization", "expect",
                             "x-tagwarden-blob-accel"}
RESPONSE_DROP = HOP_BY_HOP | {"date", "server"}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
BODY_METHODS = ("POST", "PUT", "PATCH")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# Set by the front proxy's config (nginx.conf.tmpl): only requests that came through it, and
# so will have the X-Accel-Redirect acted on, are answered that way; others are streamed.
ACCEL_HEADER = "X-Tagwarden-Blob-Accel"


def registry_error(status: int, code: str, message: str, detail: Any = None) -> Response:
    """A response in the registry's own error envelope."""
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]})
    resp = Response(body, status=status, content_type="application/json; charset=utf-8")
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    return resp


def _client() -> RegistryClient:
    return _services().registry


HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])"
                     r"(?::[0-9]{1,5})?$")


def public_origin() -> str:
    """The origin clients use to reach the gateway: TAGWARDEN_PUBLIC_URL, else (only when
    TAGWARDEN_TRUST_FORWARDED is on) X-Forwarded-Proto/Host, else the Host header."""
    settings = _services().settings
    if settings.public_url:
        return settings.public_url
    proto, host = request.scheme, request.host
    if settings.trust_forwarded:
        proto = request.headers.get("X-Forwarded-Proto", proto).split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", host).split(",")[0].strip()
    if proto not in ("http", "https") or not HOST_RE.match(host):
        raise BadRoute(400, "UNSUPPORTED", "invalid Host or X-Forwarded-Host/Proto header",
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
        request.environ, _services().settings.trust_forwarded)
    if actor := _actor():
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


def _relayed_headers(upstream: Any, origin: str | None) -> list[tuple[str, str]]:
    """Upstream headers minus hop-by-hop ones, Location pointed at the gateway's origin."""
    upstream_origin = _client().origin
    headers = []
    for key, value in upstream.headers.items():
        lower = key.lower()
        if lower in RESPONSE_DROP:
            continue
        if origin and lower == "location" and value.startswith(upstream_origin):
            value = origin + value[len(upstream_origin) :]
        headers.append((key, value))
    return headers


def _with_headers(resp: Response, headers: list[tuple[str, str]]) -> Response:
    resp.headers.clear()  # exactly the upstream's headers (no default Content-Type)
    for key, value in headers:
        resp.headers.add(key, value)
    return resp


def relay(upstream: Any, origin: str, head: bool = False) -> Response:
    """Turn an upstream urllib3 response into a streamed Flask response."""
    headers = _relayed_headers(upstream, origin)
    chunk = _services().settings.proxy_chunk_size

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
        return _with_headers(Response(status=upstream.status), headers)
    return _with_headers(Response(body(), status=upstream.status, direct_passthrough=True),
                         headers)


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
    upstream = _client().request(
        request.method, upstream_target(route, state, mount_from), headers=headers, body=body,
        chunked=chunked
    )
    if route.kind == "upload" and "mount" in request.args:
        governance.record_mount(_services(), route.name, mount_from or request.args.get("from"),
                                request.args.get("mount"), upstream.status, _actor(),
                                g.get("actor_id"))
    return upstream, origin, body


def forward(route: V2Route) -> Response:
    """Pass the request through to the registry as authorized, streaming both ways."""
    upstream, origin, _ = send(route)
    return relay(upstream, origin, head=request.method == "HEAD")


def upload(route: V2Route) -> Response:
    """A blob upload request: the session's offset and latest `_state` tracked, a chunk out
    of order refused with 416 before the registry sees it (service.core.uploads)."""
    svc, method, name = _services(), request.method, route.name
    uuid = route.ref if route.kind == "upload_session" else None
    session = uploads.session_of(svc, name, uuid) if uuid else None
    if method == "PATCH" and uuid:
        checked = uploads.check_chunk(svc, name, uuid, request.headers.get("Content-Range"),
                                      request.content_length)
        if isinstance(checked, uploads.Refusal):
            return upload_refusal(name, uuid, checked)
    # the latest state: a status request or an in-order chunk never replays a stale one
    state = session["state"] if session and method in ("GET", "HEAD", "PATCH") else None
    mount_from = None
    if route.kind == "upload" and request.args.get("mount") and not request.args.get("from"):
        mount_from = uploads.mount_source(svc, name, request.args["mount"],
                                          g.get("principal"))
    upstream, origin, body = send(route, state, mount_from)
    uploads.record_answer(svc, name, method, upstream.status, upstream.headers,
                          session["offset"] if session else 0, body.count if body else 0, uuid)
    return relay(upstream, origin, head=method == "HEAD")


def upload_refusal(name: str, uuid: str, refusal: uploads.Refusal) -> Response:
    """The gateway's own answer to a refused chunk: the error, and where the session stands."""
    resp = registry_error(refusal.status, refusal.code, refusal.message,
                          {"upload": uuid})
    if refusal.session:
        state = urlencode({"_state": refusal.session["state"]})
        resp.headers["Location"] = f"{public_origin()}/v2/{name}/blobs/uploads/{uuid}?{state}"
        resp.headers["Range"] = uploads.range_of(refusal.session["offset"])
        resp.headers["Docker-Upload-UUID"] = uuid
    return resp


def accel_blob(route: V2Route) -> Response:
    """Front-proxy mode: authorize a blob GET here, let nginx send the bytes.

    The registry's link file (with TAGWARDEN_REGISTRY_STORAGE), else the registry itself
    (HEAD), says whether the blob exists *in this repository*; if it does,
    the answer is an empty 200 carrying `X-Accel-Redirect` to the internal location that
    maps onto the registry's filesystem storage, and the front proxy serves the file
    (sendfile, Range included). Anything else is proxied as usual, so errors keep the
    registry's own envelope."""
    digest = route.ref
    storage = _services().storage
    if storage is not None and storage.blob_linked(route.name, digest):
        pass  # the registry's own link file says yes: no HEAD needed
    else:
        headers = {k: v for k, v in upstream_headers(public_origin()).items()
                   if k.lower() not in ("range", "if-range")}  # nginx applies the Range
        upstream = _client().request("HEAD", "/v2/" + route.path, headers=headers,
                                     stream=False)
        if upstream.status != 200:
            return forward(route)
    hex_digest = digest.partition(":")[2]
    resp = Response(status=200)
    resp.headers.clear()
    resp.headers["X-Accel-Redirect"] = (
        f"{_services().settings.blob_accel_path}sha256/{hex_digest[:2]}/{hex_digest}/data")
    resp.headers["Docker-Content-Digest"] = digest
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    metrics.accel_blob()
    return resp


def read_manifest(route: V2Route) -> Response:
    """A manifest GET/HEAD: from the cache when the repository links the digest (see
    service.http.v2.local_pulls), else from the registry, a GET's answer kept for the next time."""
    answer = local_pulls.manifest(route)
    if answer is not None:
        return answer
    if request.method != "GET" or g.get("manifest_digest") is None:
        return forward(route)
    upstream, origin, _ = send(route)
    length = upstream.headers.get("Content-Length") or ""
    if upstream.status != 200 or not length.isdigit() or int(length) > MAX_MANIFEST_BYTES:
        return relay(upstream, origin)
    try:
        body = upstream.data  # the whole manifest (at most 4 MiB)
    finally:
        upstream.release_conn()
    headers = _relayed_headers(upstream, origin)
    local_pulls.remember(upstream, headers)
    return _with_headers(Response(body, status=upstream.status), headers)


def read_blob(route: V2Route) -> Response:
    """A blob GET: from the registry's storage with sendfile when this repository links
    the blob (service.http.v2.local_pulls), else streamed from the registry."""
    answer = local_pulls.blob(route)
    return answer if answer is not None else forward(route)


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
    upstream = _client().request(
        "GET", f"/v2/{name}/tags/list", headers=upstream_headers(public_origin()), stream=False
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


def referrers_list(route: V2Route) -> Response:
    """The OCI 1.1 referrers API, answered from the gateway's index (distribution 2.8 has
    none): an image index of the manifests whose `subject` is the digest, maybe empty."""
    artifact_type = request.args.get("artifactType") or None
    index = referrers.listing(_services(), route.name, route.ref, artifact_type)
    resp = Response(b"" if request.method == "HEAD" else json.dumps(index), status=200,
                    content_type="application/vnd.oci.image.index.v1+json")
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    if artifact_type:
        resp.headers["OCI-Filters-Applied"] = "artifactType"
    return resp


def relay_buffered(upstream: Any, origin: str | None = None) -> Response:
    """Relay a small, already-read upstream response."""
    return _with_headers(Response(upstream.data, status=upstream.status),
                         _relayed_headers(upstream, origin))


def _services() -> Services:
    return current_app.extensions["tagwarden"]


def _actor() -> str | None:
    return g.get("actor_name")


def _read_manifest_body() -> bytes | Response:
    """The manifest bytes, refused above 4 MiB without reading them all; read only once this
    process's manifest memory budget has room for them (else Busy: 429 TOOMANYREQUESTS)."""
    length = request.content_length
    if (length or 0) > MAX_MANIFEST_BYTES:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              "manifest exceeds 4 MiB")
    _reserve_manifest_memory(MAX_MANIFEST_BYTES if length is None else length)
    body = request.stream.read(MAX_MANIFEST_BYTES + 1)
    if len(body) > MAX_MANIFEST_BYTES:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              "manifest exceeds 4 MiB")
    return body


# Seconds a manifest PUT waits for room in the manifest memory budget before a 429.
MANIFEST_MEMORY_WAIT = 10.0


def _reserve_manifest_memory(length: int) -> None:
    """Hold what reading and parsing `length` manifest bytes may cost until the request ends
    (the body lives until it has been forwarded); Busy when no room came in time."""
    reserved = _services().manifest_budget.acquire(parse_cost(length), MANIFEST_MEMORY_WAIT)
    if reserved is None:
        raise Busy("too many large manifests are being processed by this gateway process; "
                   "retry shortly")
    g.manifest_memory_reserved = reserved


@bp.teardown_request
def _release_manifest_memory(exc: BaseException | None) -> None:  # noqa: ARG001
    """Give back the manifest memory this request reserved, whatever its outcome."""
    reserved = g.pop("manifest_memory_reserved", None)
    if reserved:
        _services().manifest_budget.release(reserved)


def _validate_manifest(body: bytes, media_type: str) -> Response | None:
    if media_type not in MANIFEST_TYPES:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              f"unsupported manifest media type {media_type!r}; "
                              f"use one of {', '.join(MANIFEST_TYPES)}")
    try:
        parsed = parse_manifest(body)  # counts objects before building any
    except ManifestTooComplex as exc:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid", str(exc))
    except (ValueError, UnicodeDecodeError) as exc:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              f"manifest is not valid JSON: {exc}")
    except RecursionError:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              "manifest JSON is nested too deeply")
    if not isinstance(parsed, dict):
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              "manifest must be a JSON object")
    version = parsed.get("schemaVersion")
    if type(version) is not int or version != 2:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              f"schemaVersion must be 2, not {str(version)[:20]!r}")
    declared = parsed.get("mediaType")
    if declared is not None and declared != media_type:
        return registry_error(400, "MANIFEST_INVALID", "manifest invalid",
                              f"mediaType {declared!r} does not match Content-Type "
                              f"{media_type!r}")
    return None


def put_manifest(name: str, ref: str) -> Response:
    """Govern a manifest PUT: classify and check the tag before the registry sees a byte."""
    body = _read_manifest_body()
    if isinstance(body, Response):
        return body
    media_type = (request.mimetype or "").strip()
    if (bad := _validate_manifest(body, media_type)) is not None:
        return bad
    digest = sha256_digest(body)
    if ":" in ref:
        if not DIGEST_RE.match(ref) or ref != digest:
            return registry_error(400, "DIGEST_INVALID", "provided digest did not match "
                                  "uploaded content", {"expected": ref, "computed": digest})
        return _forward_manifest(name, ref, None, body, digest, media_type)
    svc = _services()
    policy = governance.policy_for(svc, name)
    if not is_immutable(policy, ref):
        return _govern_put(svc, policy, name, ref, body, digest, media_type)
    # check, write and record an immutable tag as one step (recording it releases the lock)
    with svc.tags.lock(name, ref) as lock:
        return _govern_put(svc, policy, name, ref, body, digest, media_type, lock)


def _govern_put(svc: Services, policy: Any, name: str, ref: str, body: bytes, digest: str,
                media_type: str, lock: TagLock | None = None) -> Response:
    decision = governance.check_push(svc, name, ref, digest, policy)
    metrics.decision("push", decision)
    if not decision.allowed:
        governance.deny(svc, "push", decision, _actor(), g.get("actor_id"),
                        repository=name, tag=ref, digest=digest)
    return _forward_manifest(name, ref, ref, body, digest, media_type, lock)


def _forward_manifest(name: str, ref: str, tag: str | None, body: bytes, digest: str,
                      media_type: str, lock: TagLock | None = None) -> Response:
    origin = public_origin()
    headers = upstream_headers(origin)
    headers["Content-Length"] = str(len(body))
    headers["Content-Type"] = media_type  # the validated type, never the client's header
    upstream = _client().request("PUT", f"/v2/{name}/manifests/{ref}", headers=headers,
                                 body=body, stream=False)
    resp = relay_buffered(upstream, origin)
    if upstream.status == 201:
        svc = _services()
        governance.after_manifest_put(svc, name, tag, digest, lock)
        if subject := referrers.index_pushed(svc, name, digest, body, media_type):
            resp.headers["OCI-Subject"] = subject
        if tag:  # queued once the answer is on its way: the client does not wait for it
            resp.call_on_close(lambda: governance.scan_after_push(svc, name, digest))
    return resp


def delete_manifest(route: V2Route) -> Response:
    """Govern a manifest DELETE: what an environment, an immutable tag or a protected index
    needs stays; a DELETE by tag removes that tag only."""
    svc, name, ref = _services(), route.name, route.ref
    decision = governance.check_delete(svc, name, ref)
    metrics.decision("delete", decision)
    if not decision.allowed:
        governance.deny(svc, "delete", decision, _actor(), g.get("actor_id"), repository=name,
                        reference=ref)
    if ":" not in ref:  # a tag: drop it alone (the registry deletes by digest only)
        if governance.untag(svc, name, ref) is None:
            return registry_error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"tag": ref})
        resp = Response(status=202)
        resp.headers[API_VERSION[0]] = API_VERSION[1]
        return resp
    response = forward(route)
    if response.status_code == 202 and DIGEST_RE.match(ref):
        svc.manifest_cache.discard(ref)
        governance.after_manifest_delete(svc, name, ref)
    return response


def delete_blob(route: V2Route) -> Response:
    """Govern a blob DELETE (admin only, checked before): a blob a protected manifest uses
    stays."""
    svc = _services()
    decision = governance.check_blob_delete(svc, route.name, route.ref)
    metrics.decision("delete", decision)
    if not decision.allowed:
        governance.deny(svc, "delete", decision, _actor(), g.get("actor_id"),
                        repository=route.name, digest=route.ref)
    return forward(route)


@bp.route("/v2/", methods=METHODS, defaults={"path": ""})
@bp.route("/v2/<path:path>", methods=METHODS)
def v2(path: str) -> Response:
    """The Docker Registry HTTP API v2, proxied with policy enforcement."""
    # refuses `..`, bad names and refs
    route = g.get("v2_route") or routes.parse(path, request.method)
    if request.method == "GET" and route.kind == "tags":
        return tags_list(route.name)
    if request.method in ("GET", "HEAD") and route.kind == "referrers":
        return referrers_list(route)
    if request.method in ("GET", "HEAD") and route.kind == "catalog":
        return catalog.answer(_client(), g.principal.listing_filter() if g.principal else None)
    if (request.method == "GET" and route.kind == "blob" and _services().settings.blob_accel_path
            and request.headers.get(ACCEL_HEADER) == _services().settings.blob_accel_path):
        return accel_blob(route)
    if request.method in ("GET", "HEAD") and route.kind == "manifest":
        return read_manifest(route)
    if request.method == "GET" and route.kind == "blob":
        return read_blob(route)
    if request.method in ("PUT", "DELETE") and route.kind == "manifest":
        if request.method == "PUT":
            return put_manifest(route.name, route.ref)
        return delete_manifest(route)
    if request.method == "DELETE" and route.kind == "blob":
        return delete_blob(route)
    if route.kind == "upload_session" or (route.kind == "upload" and request.method == "POST"):
        return upload(route)
    return forward(route)
