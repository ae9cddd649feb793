"""Policies: list, read, create or replace, delete, and dry-run evaluation."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint
from marshmallow import fields, validate

from service.core import dryrun
from service.domain.errors import InvalidRequest, NotFound
from service.domain.policy import DEFAULT_POLICY, Policy
from service.domain.schemas.policy import PolicySchema
from service.http.api import svc
from service.http.api.meta import endpoint
from service.http.schemas.common import DecisionSchema, StrictSchema, page_of

blp = Blueprint("policies", __name__, url_prefix="/api/v1/policies",
                description="Tag and promotion policies")



class EvaluateSchema(StrictSchema):
    """A dry run: what would the policy say to this push, delete or promotion?"""

    action = fields.String(required=True, validate=validate.OneOf(["push", "delete", "promote"]))
    repository = fields.String(required=True, validate=validate.Length(min=1, max=255))
    tag = fields.String(validate=validate.Length(min=1, max=128))
    digest = fields.String(validate=validate.Regexp(r"^sha256:[0-9a-f]{64}$"))
    environment = fields.String(validate=validate.Length(min=1, max=63))
    from_environment = fields.String(validate=validate.Length(min=1, max=63))


PolicyPageSchema = page_of(PolicySchema, "PolicyPage")


@blp.route("", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.response(200, PolicyPageSchema)
def list_policies() -> dict[str, Any]:
    """List stored policies (the built-in `default` applies where none matches)."""
    return {"items": list(svc().policies.all()), "next_cursor": None}


@blp.route("/<string:name>", methods=["GET"])
@endpoint(role="reader", scope="repository")
@blp.response(200, PolicySchema)
def get_policy(name: str) -> Policy:
    """Read one policy (`default` is the built-in one unless stored under that name)."""
    policy = svc().policies.get(name)
    if policy is None and name == DEFAULT_POLICY.name:
        return DEFAULT_POLICY
    if policy is None:
        raise NotFound(f"policy {name!r} not found")
    return policy


@blp.route("/<string:name>", methods=["PUT"])
@endpoint(role="admin", scope="", audit="policy.put")
@blp.arguments(PolicySchema)
@blp.response(200, PolicySchema)
def put_policy(policy: Policy, name: str) -> Policy:
    """Create or replace a policy (the body's name must match the path)."""
    if policy.name != name:
        raise InvalidRequest(
            f"policy name {policy.name!r} does not match the path {name!r}",
            errors={"name": [f"must be {name!r}"]},
        )
    svc().policies.put(policy)
    return policy


@blp.route("/<string:name>", methods=["DELETE"])
@endpoint(role="admin", scope="", audit="policy.delete")
@blp.response(204)
def delete_policy(name: str) -> None:
    """Delete a policy."""
    if not svc().policies.delete(name):
        raise NotFound(f"policy {name!r} not found")


@blp.route("/evaluate", methods=["POST"])
@endpoint(role="reader", scope="repository", errors=(400, 404, 502))
@blp.arguments(EvaluateSchema)
@blp.response(200, DecisionSchema)
def evaluate(args: dict[str, Any]) -> dict[str, Any]:
    """Evaluate a push, delete or promotion against the policy; changes nothing."""
    return dryrun.evaluate(svc(), args, g.get("actor_name")).to_dict()
