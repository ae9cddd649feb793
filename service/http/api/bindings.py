"""Immutable tag bindings: listed, and released by an admin."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint

from service.core import governance
from service.http.api import svc
from service.http.api.meta import endpoint
from service.http.schemas.bindings import (
    BindingPageSchema,
    BindingQueryArgsSchema,
    BindingReleaseQueryArgsSchema,
    BindingReleaseSchema,
    BindingSchema,
)

blp = Blueprint("tag_bindings", __name__, url_prefix="/api/v1",
                description="Immutable tag bindings")


@blp.route("/tag-bindings", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.arguments(BindingQueryArgsSchema, location="query")
@blp.response(200, BindingPageSchema)
def list_bindings(args: dict[str, Any]) -> dict[str, Any]:
    """The immutable tags of a repository and the digest each is bound to for good."""
    items = governance.list_bindings(svc(), args["repository"])
    return {"items": items, "next_cursor": None}


@blp.route("/tag-bindings", methods=["DELETE"])
@endpoint(role="admin", scope="repository", audit="tag_binding.release", errors=(400, 404))
@blp.arguments(BindingReleaseQueryArgsSchema, location="query")
@blp.arguments(BindingReleaseSchema)
@blp.response(200, BindingSchema)
def release_binding(args: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Release an immutable tag's binding (admin; audited with the reason): the tag may then
    be pushed with other content."""
    return governance.release_binding(svc(), args["repository"], args["tag"], body["reason"],
                                      g.get("actor_name"))
