"""The OCI 1.1 referrers API, answered from the gateway's index."""

from __future__ import annotations

import json

from flask import Response, request

from service.core import referrers
from service.http.v2.forwarding import API_VERSION, current_services
from service.registry.routes import V2Route


def referrers_list(route: V2Route) -> Response:
    """The OCI 1.1 referrers API, answered from the gateway's index (distribution 2.8 has
    none): an image index of the manifests whose `subject` is the digest, maybe empty."""
    artifact_type = request.args.get("artifactType") or None
    index = referrers.listing(current_services(), route.name, route.ref, artifact_type)
    resp = Response(b"" if request.method == "HEAD" else json.dumps(index), status=200,
                    content_type="application/vnd.oci.image.index.v1+json")
    resp.headers[API_VERSION[0]] = API_VERSION[1]
    if artifact_type:
        resp.headers["OCI-Filters-Applied"] = "artifactType"
    return resp
