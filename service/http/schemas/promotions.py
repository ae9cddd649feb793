"""Promotion, rollback, history and environment schemas."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from service.domain.schemas.base import DIGEST
from service.domain.tags import REPOSITORY_GRAMMAR, valid_repository
from service.http.schemas.common import (
    PageQueryArgsSchema,
    StrictSchema,
    ViolationSchema,
    page_of,
    utc_representable,
)

REPOSITORY = validate.Length(min=1, max=255)
AT_FORMAT = "must be RFC 3339 with a time zone, e.g. 2026-11-24T03:12:00Z"


def repository_name(name: str) -> None:
    """Refuse a name no registry repository can have (`Team/App`) instead of answering empty."""
    if not valid_repository(name):
        raise ValidationError(f"not a registry repository name: {REPOSITORY_GRAMMAR}")
ENVIRONMENT = validate.Length(min=1, max=63)


class PromotionRequestSchema(StrictSchema):
    """Move an environment of a repository to the digest of a tag, a digest or another
    environment."""

    repository = fields.String(required=True, validate=REPOSITORY)
    environment = fields.String(required=True, validate=ENVIRONMENT)
    tag = fields.String(validate=validate.Length(min=1, max=128))
    digest = fields.String(validate=DIGEST)
    from_environment = fields.String(validate=ENVIRONMENT)
    reason = fields.String(validate=validate.Length(max=1000), allow_none=True)
    expected_digest = fields.String(validate=DIGEST, allow_none=True)
    dry_run = fields.Boolean(load_default=False)
    hotfix = fields.Boolean(load_default=False, metadata={
        "description": "fix forward: skip the gates the environment's `hotfix.bypass` names "
                       "once its hotfix approvals are there (`reason` required; `latest` and "
                       "the scan gate always apply); recorded as `kind: hotfix`"})


class RollbackRequestSchema(StrictSchema):
    """Move an environment back to the previous digest or to a named earlier promotion."""

    repository = fields.String(required=True, validate=REPOSITORY)
    environment = fields.String(required=True, validate=ENVIRONMENT)
    to = fields.String(load_default="previous", validate=validate.Length(min=1, max=64))
    reason = fields.String(validate=validate.Length(max=1000), allow_none=True)
    expected_digest = fields.String(
        validate=DIGEST, allow_none=True,
        metadata={"description": "refuse (409 conflict) unless the environment points to this "
                                 "digest now: a retried rollback never rolls back twice"})


class PromotionSchema(Schema):
    """A promotion record (or, for a dry run, its preview and the decision)."""

    id = fields.String(allow_none=True)
    kind = fields.String(validate=validate.OneOf(["promotion", "rollback", "hotfix",
                                                  "reconciled"]), metadata={
        "description": "`reconciled`: found in the registry by the reconciliation after a "
                       "restore (a change made after the backup)"})
    repository = fields.String()
    environment = fields.String()
    digest = fields.String()
    previous_digest = fields.String(allow_none=True)
    source = fields.Dict(keys=fields.String(), values=fields.String())
    tags = fields.List(fields.String())
    actor = fields.String(allow_none=True)
    reason = fields.String(allow_none=True)
    created_at = fields.String()
    policy = fields.String()
    idempotency_key = fields.String(
        allow_none=True, metadata={"description": "the Idempotency-Key the request carried"})
    approvals = fields.List(fields.String(), metadata={
        "description": "ids of the approvals the `approvals` gate counted (empty without one)"})
    reverts = fields.String(allow_none=True, metadata={
        "description": "a rollback: the id of the promotion it undid"})
    bypassed = fields.List(fields.String(), metadata={
        "description": "a hotfix: the rules of the gates it set aside"})
    bypassed_violations = fields.List(fields.Nested(ViolationSchema), metadata={
        "description": "a hotfix dry run: what the bypassed gates would have said"})
    dry_run = fields.Boolean()
    allowed = fields.Boolean()
    violations = fields.List(fields.Nested(ViolationSchema))


class PromotionQueryArgsSchema(PageQueryArgsSchema):
    """Filters of the history."""

    repository = fields.String(validate=[REPOSITORY, repository_name])
    environment = fields.String(validate=ENVIRONMENT)


class EnvironmentsQueryArgsSchema(StrictSchema):
    """Which repository, and optionally at what time."""

    repository = fields.String(required=True, validate=[REPOSITORY, repository_name])
    at = fields.AwareDateTime(format="iso", default_timezone=None, validate=utc_representable,
                              error_messages={"invalid": AT_FORMAT,
                                              "invalid_awareness": AT_FORMAT})


class EnvironmentStateSchema(Schema):
    """One environment's pointer."""

    name = fields.String()
    digest = fields.String(allow_none=True)
    promotion_id = fields.String(allow_none=True)
    promoted_at = fields.String(allow_none=True)
    tags = fields.List(fields.String())


class EnvironmentsSchema(Schema):
    """Every environment of a repository, now or at `at`."""

    repository = fields.String()
    at = fields.String()
    environments = fields.List(fields.Nested(EnvironmentStateSchema))


PromotionPageSchema = page_of(PromotionSchema, "PromotionPage")
