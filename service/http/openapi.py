"""The OpenAPI document: flask-smorest's spec plus errors, security, probes; served.

The committed openapi.yaml is generated (`tagwarden openapi`, by `app.openapi_yaml`), never
edited by hand: the marshmallow schemas that validate requests are the ones the document
shows, and a unit test fails when the two differ. flask-smorest documents routes and schemas;
this module adds what it cannot know: our error envelope and the statuses each operation
answers with, the two bearer schemes, the Idempotency-Key header, operation ids, and the
/healthz and /readyz probes.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import yaml
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask, Response, current_app

from service.http.api import meta as api_meta
from service.http.api.meta import RouteMeta
from service.http.schemas.common import ErrorSchema
from service.services import Services

ERROR_REF = {"$ref": "#/components/schemas/Error"}
TOP_LEVEL_ORDER = ("openapi", "info", "security", "tags", "paths", "components")
OPERATION_ORDER = ("operationId", "summary", "description", "tags", "security", "parameters",
                   "requestBody", "responses")
METHODS = ("get", "put", "post", "delete", "patch")

DESCRIPTION = """\
Registry governance gateway: tag policies, promotions, scans and webhooks in front of a
Docker Registry v2.

**Authentication.** `/api/v1/` takes `Authorization: Bearer <token>` (scheme `bearerAuth`);
the registry's notification webhook takes the shared webhook token instead (`webhookToken`).
The Docker Registry HTTP API v2 at `/v2/` is proxied with the push and delete policies
enforced; it is not described here and takes HTTP Basic authentication with any user name
and an API token as the password, so `docker login`, `skopeo login` and `buildah login` work.

**Errors.** Every 4xx/5xx answer of `/api/v1/` is the `Error` envelope
`{"code", "message"}`, plus `errors` (field → messages) on validation failures and
`violations` on policy denials.

**Lists** take `limit` (default 50, max 500) and an opaque `cursor`, and answer
`{"items": [...], "next_cursor": ...}`, newest first.
"""

# status → (component name, description naming the envelope codes it carries)
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "`invalid_request`: a malformed body, parameter or header"),
    401: ("Unauthorized", "`unauthorized`: missing, invalid, expired or revoked token"),
    403: ("Forbidden", "`forbidden` (the token's role or scope does not allow this call) or "
                       "`policy_denied` (with `violations`)"),
    404: ("NotFound", "`not_found`: the named resource does not exist"),
    409: ("Conflict", "`conflict`: the current state does not allow this now (expected "
                      "digest differs, the same Idempotency-Key is still running, or a "
                      "concurrent promotion holds the environment)"),
    413: ("PayloadTooLarge", "`payload_too_large`: the body is over the limit"),
    415: ("UnsupportedMediaType", "`unsupported_media_type`: wrong Content-Type"),
    422: ("UnprocessableEntity", "`invalid_request` with `errors` per field, or "
                                 "`idempotency_mismatch` (same key, another body)"),
    429: ("TooManyRequests", "`rate_limited`: too many calls for this token"),
    502: ("BadGateway", "`registry_unavailable`: the registry answered with an error"),
    503: ("ServiceUnavailable", "`store_unavailable` (Redis) or `registry_unavailable` "
                                "(the registry is unreachable)"),
}
# Every authenticated call: bad token, role/scope, rate limit, Redis down. The statuses an
# operation's domain code raises beyond these are the route's own (`@endpoint(errors=...)`),
# and so is whether it takes an Idempotency-Key (`idempotent=True`).
AUTHENTICATED = (401, 403, 429, 503)
IDEMPOTENCY_PARAMETER = {
    "in": "header", "name": "Idempotency-Key", "required": False,
    "description": "Retrying with the same key and body replays the first answer; the same "
                   "key with another body is 422 `idempotency_mismatch`, and 409 while the "
                   "first call still runs.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[ -~]+$"},
}
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "An API token: the bootstrap admin token (TAGWARDEN_ADMIN_TOKEN) or "
                       "one created with POST /api/v1/tokens (role admin, ci or reader).",
    },
    "webhookToken": {
        "type": "http", "scheme": "bearer",
        "description": "The shared token the registry sends with its notifications "
                       "(TAGWARDEN_WEBHOOK_TOKEN).",
    },
}
NOTIFICATION_SCHEMA = {
    "type": "object", "required": ["events"],
    "description": "The registry's notification envelope (distribution's `notifications`).",
    "properties": {"events": {"type": "array", "items": {
        "type": "object",
        "description": "One event: `id`, `action` (push, pull, mount, delete), `timestamp`, "
                       "`target` (`repository`, `digest`, `tag`, `mediaType`, ...), `request`, "
                       "`actor`; events Tagwarden cannot use are counted as skipped.",
    }}},
}
PROBE_SCHEMAS = {
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}},
    },
    "Readiness": {
        "type": "object", "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "unavailable"]},
            "checks": {
                "type": "object", "required": ["redis", "registry"],
                "properties": {name: {"type": "string", "enum": ["ok", "down"]}
                               for name in ("redis", "registry")},
            },
            "message": {"type": "string", "description": "which dependency is not answering"},
        },
    },
}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


PROBE_PATHS = {
    "/healthz": {"get": {
        "operationId": "healthz", "tags": ["service"], "security": [],
        "summary": "Liveness: 200 while the process runs.",
        "responses": {"200": {"description": "OK", "content": _json("Health")}},
    }},
    "/readyz": {"get": {
        "operationId": "readyz", "tags": ["service"], "security": [],
        "summary": "Readiness: 200 when Redis and the registry answer; 503 naming the one "
                   "that does not.",
        "responses": {
            "200": {"description": "Ready", "content": _json("Readiness")},
            "503": {"description": "Redis or the registry is not answering",
                    "content": _json("Readiness")},
        },
    }},
}


def _openapi_path(rule: str) -> str:
    """`/a/<string:name>` → `/a/{name}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def endpoints(app: Flask) -> dict[tuple[str, str], str]:
    """(OpenAPI path, lower-case method) → Flask endpoint, for every route of the app."""
    found: dict[tuple[str, str], str] = {}
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            found[(_openapi_path(rule.rule), method.lower())] = rule.endpoint
    return found


def _error_statuses(meta: RouteMeta, operation: dict[str, Any], path_item: dict[str, Any]
                    ) -> set[int]:
    statuses = set(meta.errors)
    if meta.role is None:  # authenticates its caller itself: its own errors only
        return statuses
    statuses.update(AUTHENTICATED)
    params = operation.get("parameters", []) + path_item.get("parameters", [])
    if "requestBody" in operation:
        statuses.update((400, 413, 422))
    if any(p.get("in") == "query" for p in params):
        statuses.update((400, 422))  # 400: a cursor that is not one of ours
    if any(p.get("in") == "path" for p in params):
        statuses.add(404)
    return statuses


def _fix_operation(endpoint: str, meta: RouteMeta, operation: dict[str, Any],
                   path_item: dict[str, Any], used_ids: set[str]) -> None:
    """Operation id, explicit error responses (success first, then errors, then default)."""
    op_id = endpoint.rsplit(".", 1)[-1]
    if op_id in used_ids:
        op_id = endpoint.replace(".", "_")
    used_ids.add(op_id)
    operation["operationId"] = op_id
    responses = operation.get("responses", {})
    success = {code: body for code, body in responses.items()
               if code != "default" and int(code) < 400}
    errors = {str(status): {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
              for status in sorted(_error_statuses(meta, operation, path_item))}
    operation["responses"] = {**dict(sorted(success.items())), **errors,
                              "default": {"$ref": "#/components/responses/DefaultError"}}
    for param in operation.get("parameters", []):
        _not_null(param.get("schema", {}))
    if meta.idempotent:
        operation.setdefault("parameters", []).append(copy.deepcopy(IDEMPOTENCY_PARAMETER))
    ordered = _ordered(operation, OPERATION_ORDER)
    operation.clear()
    operation.update(ordered)


def _not_null(schema: dict[str, Any]) -> None:
    """A parameter is absent or a string, never JSON null: `load_default=None` fields come
    out as `type: [string, "null"], default: null`, which generated clients and validators
    take literally."""
    kinds = schema.get("type")
    if isinstance(kinds, list) and "null" in kinds:
        rest = [kind for kind in kinds if kind != "null"]
        schema["type"] = rest[0] if len(rest) == 1 else rest
        if schema.get("default", "") is None:
            del schema["default"]


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """The mapping with the keys of `order` first, in that order, then the others."""
    return {key: mapping[key] for key in order if key in mapping} | mapping


def _error_schema(app: Flask) -> dict[str, Any]:
    """ErrorSchema as JSON Schema, through the same converter flask-smorest uses."""
    spec = app.extensions["api"].spec
    plugin = next(p for p in spec.plugins if isinstance(p, MarshmallowPlugin))
    assert plugin.converter is not None  # set when the plugin was initialised with the spec
    return plugin.converter.schema2jsonschema(ErrorSchema)


def _components(doc: dict[str, Any], error: dict[str, Any]) -> None:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("PaginationMetadata", None)  # flask-smorest's page-number pagination; unused
    schemas["Error"] = error
    schemas.update(copy.deepcopy(PROBE_SCHEMAS))
    schemas["RegistryNotification"] = copy.deepcopy(NOTIFICATION_SCHEMA)
    responses: dict[str, Any] = {
        name: {"description": f"{status}: {text}", "content": {"application/json": {
            "schema": ERROR_REF}}}
        for status, (name, text) in sorted(ERROR_RESPONSES.items())
    }
    responses["Unauthorized"]["headers"] = {"WWW-Authenticate": {
        "description": "`Bearer realm=\"tagwarden\"`", "schema": {"type": "string"}}}
    responses["DefaultError"] = {
        "description": "Any other error (`internal_error` on 500)",
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    components["responses"] = responses
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)


def build_spec(app: Flask) -> dict[str, Any]:
    """The complete OpenAPI document of this app, as a dict in a stable key order."""
    error = _error_schema(app)
    doc = copy.deepcopy(app.extensions["api"].spec.to_dict())
    routes = endpoints(app)
    used_ids: set[str] = set()
    for path, item in doc.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                endpoint = routes[(path, method)]
                _fix_operation(endpoint, api_meta.of(app, endpoint), item[method], item,
                               used_ids)
    _components(doc, error)
    doc["paths"] = {**copy.deepcopy(PROBE_PATHS), **doc.get("paths", {})}
    doc["info"] = {**doc.get("info", {}), "description": DESCRIPTION}
    doc["security"] = [{"bearerAuth": []}]
    doc["tags"] = [{"name": "service", "description": "Liveness and readiness probes"},
                   *doc.get("tags", [])]
    return _ordered(doc, TOP_LEVEL_ORDER)


class _Dumper(yaml.SafeDumper):
    """Block scalars for multi-line text; no anchors for repeated objects."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(doc: dict[str, Any]) -> str:
    """YAML text of the document (key order kept, so the output is stable)."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _cached(app: Flask) -> dict[str, Any]:
    """Built on first use, after every blueprint is registered."""
    cache = app.extensions.setdefault("openapi", {})
    if "doc" not in cache:
        doc = build_spec(app)
        cache.update(doc=doc, yaml=to_yaml(doc), json=json.dumps(doc, indent=2))
    return cache


def install(app: Flask, svc: Services) -> None:
    """GET /openapi.yaml, /openapi.json and the Swagger UI at /docs."""
    from service.http import docs

    def openapi_yaml() -> Response:
        """The OpenAPI document (YAML)."""
        return Response(_cached(current_app)["yaml"], mimetype="application/yaml")

    def openapi_json() -> Response:
        """The OpenAPI document (JSON)."""
        return Response(_cached(current_app)["json"], mimetype="application/json")

    app.add_url_rule("/openapi.yaml", "openapi_yaml", openapi_yaml, methods=["GET"])
    app.add_url_rule("/openapi.json", "openapi_json", openapi_json, methods=["GET"])
    app.register_blueprint(docs.bp)
