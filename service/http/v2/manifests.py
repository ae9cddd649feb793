"""Manifests: reads from the cache or the registry, PUTs validated and governed before the
registry sees a byte, DELETEs governed (a DELETE by tag removes that tag only)."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request

from service.core import governance, referrers
from service.domain.errors import Busy
from service.domain.policy import is_immutable
from service.http.v2 import local_pulls
from service.http.v2.forwarding import (
    API_VERSION,
    DIGEST_RE,
    actor_name,
    current_services,
    forward,
    public_origin,
    registry_client,
    registry_error,
    relay,
    relay_buffered,
    relayed_headers,
    send,
    upstream_headers,
    with_headers,
)
from service.obs import metrics
from service.registry.client import MANIFEST_TYPES, MAX_MANIFEST_BYTES, sha256_digest
from service.registry.limits import ManifestTooComplex, parse_cost, parse_manifest
from service.registry.routes import V2Route
from service.services import Services
from service.store.tagmap import TagLock


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
    headers = relayed_headers(upstream, origin)
    local_pulls.remember(upstream, headers)
    return with_headers(Response(body, status=upstream.status), headers)


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
    reserved = current_services().manifest_budget.acquire(parse_cost(length), MANIFEST_MEMORY_WAIT)
    if reserved is None:
        raise Busy("too many large manifests are being processed by this gateway process; "
                   "retry shortly")
    g.manifest_memory_reserved = reserved


def release_manifest_memory(exc: BaseException | None) -> None:  # noqa: ARG001
    """Give back the manifest memory this request reserved, whatever its outcome."""
    reserved = g.pop("manifest_memory_reserved", None)
    if reserved:
        current_services().manifest_budget.release(reserved)


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
    svc = current_services()
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
        governance.deny(svc, "push", decision, actor_name(), g.get("actor_id"),
                        repository=name, tag=ref, digest=digest)
    return _forward_manifest(name, ref, ref, body, digest, media_type, lock)


def _forward_manifest(name: str, ref: str, tag: str | None, body: bytes, digest: str,
                      media_type: str, lock: TagLock | None = None) -> Response:
    origin = public_origin()
    headers = upstream_headers(origin)
    headers["Content-Length"] = str(len(body))
    headers["Content-Type"] = media_type  # the validated type, never the client's header
    upstream = registry_client().request("PUT", f"/v2/{name}/manifests/{ref}", headers=headers,
                                 body=body, stream=False)
    resp = relay_buffered(upstream, origin)
    if upstream.status == 201:
        svc = current_services()
        governance.after_manifest_put(svc, name, tag, digest, lock)
        if subject := referrers.index_pushed(svc, name, digest, body, media_type):
            resp.headers["OCI-Subject"] = subject
        if tag:  # queued once the answer is on its way: the client does not wait for it
            resp.call_on_close(lambda: governance.scan_after_push(svc, name, digest))
    return resp


def delete_manifest(route: V2Route) -> Response:
    """Govern a manifest DELETE: what an environment, an immutable tag or a protected index
    needs stays; a DELETE by tag removes that tag only."""
    svc, name, ref = current_services(), route.name, route.ref
    decision = governance.check_delete(svc, name, ref)
    metrics.decision("delete", decision)
    if not decision.allowed:
        governance.deny(svc, "delete", decision, actor_name(), g.get("actor_id"), repository=name,
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
