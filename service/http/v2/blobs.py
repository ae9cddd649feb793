"""Blobs: GETs from local storage (sendfile) or through the front proxy (X-Accel-Redirect)
when the repository links the blob, else streamed; DELETEs governed."""

from __future__ import annotations

from flask import Response, g

from service.core import governance
from service.http.v2 import local_pulls
from service.http.v2.forwarding import (
    API_VERSION,
    actor_name,
    current_services,
    forward,
    public_origin,
    registry_client,
    upstream_headers,
)
from service.obs import metrics
from service.registry.routes import V2Route

# Set by the front proxy's config (nginx.conf.tmpl): only requests that came through it, and
# so will have the X-Accel-Redirect acted on, are answered that way; others are streamed.
ACCEL_HEADER = "X-Tagwarden-Blob-Accel"


def accel_blob(route: V2Route) -> Response:
    """Front-proxy mode: authorize a blob GET here, let nginx send the bytes.

    The registry's link file (with TAGWARDEN_REGISTRY_STORAGE), else the registry itself
    (HEAD), says whether the blob exists *in this repository*; if it does,
    the answer is an empty 200 carrying `X-Accel-Redirect` to the internal location that
    maps onto the registry's filesystem storage, and the front proxy serves the file
    (sendfile, Range included). Anything else is proxied as usual, so errors keep the
    registry's own envelope."""
    digest = route.ref
    storage = current_services().storage
    if storage is not None and storage.blob_linked(route.name, digest):
        pass  # the registry's own link file says yes: no HEAD needed
    else:
        headers = {k: v for k, v in upstream_headers(public_origin()).items()
                   if k.lower() not in ("range", "if-range")}  # nginx applies the Range
        upstream = registry_client().read("HEAD", "/v2/" + route.path, headers=headers)
        if upstream.status != 200:
            return forward(route)
    hex_digest = digest.partition(":")[2]
    resp = Response(status=200)
    resp.headers.clear()
    resp.headers["X-Accel-Redirect"] = (
        f"{current_services().settings.blob_accel_path}sha256/{hex_digest[:2]}/{hex_digest}/data")
    resp.headers["Docker-Content-Digest"] = digest
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    metrics.accel_blob()
    return resp


def read_blob(route: V2Route) -> Response:
    """A blob GET: from the registry's storage with sendfile when this repository links
    the blob (service.http.v2.local_pulls), else streamed from the registry."""
    answer = local_pulls.blob(route)
    return answer if answer is not None else forward(route)


def delete_blob(route: V2Route) -> Response:
    """Govern a blob DELETE (admin only, checked before): a blob a protected manifest uses
    stays."""
    svc = current_services()
    decision = governance.check_blob_delete(svc, route.name, route.ref)
    metrics.decision("delete", decision)
    if not decision.allowed:
        governance.deny(svc, "delete", decision, actor_name(), g.get("actor_id"),
                        repository=route.name, digest=route.ref)
    return forward(route)
