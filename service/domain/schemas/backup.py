"""The backup stream (NDJSON, one `{"kind", ...}` object a line) and the restore's answers.

Every line of a restore is loaded through one of these schemas before anything is written;
envelopes refuse unknown fields, records keep fields a later version may add (they are
served back through the API's own schemas, never as they are).
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from service.domain.schemas.base import DIGEST, StrictSchema
from service.domain.tags import valid_repository, valid_tag

VERSION = 1
KINDS = ("header", "policy", "token", "subscription", "promotion", "pointer", "binding",
         "approval", "verification", "referrer", "footer")
# the order the lines come in (a restore refuses another: pointers are checked against the
# history before them, the footer's counts against everything)
ORDER = {kind: i for i, kind in enumerate(KINDS)}
STREAM_ID = validate.Regexp(r"^\d{1,20}-\d{1,20}$", error="must be a stream id <ms>-<seq>")
RFC3339 = validate.Regexp(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$",
    error="must be RFC 3339 UTC, e.g. 2026-11-28T16:00:00Z")
ID = validate.Regexp(r"^[A-Za-z0-9_.:-]{1,100}$", error="must be 1-100 of A-Z a-z 0-9 _ . : -")
HASH = validate.Regexp(r"^[0-9a-f]{64}$", error="must be a SHA-256 hex digest")


def _repository(name: str) -> None:
    if not valid_repository(name):
        raise ValidationError("not a registry repository name")


def _tag(name: str) -> None:
    if not valid_tag(name):
        raise ValidationError("not a registry tag")


Repository = fields.String(required=True, validate=[validate.Length(1, 255), _repository])
Environment = fields.String(required=True, validate=validate.Length(1, 63))


class _Record(Schema):
    """A stored record: its known fields checked, later fields kept."""

    class Meta:
        unknown = INCLUDE


class PromotionRecordSchema(_Record):
    id = fields.String(required=True, validate=ID)
    kind = fields.String(required=True, validate=validate.OneOf(
        ["promotion", "rollback", "hotfix", "reconciled"]))
    repository = Repository
    environment = Environment
    digest = fields.String(required=True, validate=DIGEST)
    previous_digest = fields.String(required=True, allow_none=True, validate=DIGEST)
    source = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    tags = fields.List(fields.String(validate=validate.Length(1, 128)), required=True)
    actor = fields.String(required=True, allow_none=True)
    reason = fields.String(allow_none=True, validate=validate.Length(max=1000))
    created_at = fields.String(required=True, validate=RFC3339)
    policy = fields.String(required=True)


class ApprovalRecordSchema(_Record):
    id = fields.String(required=True, validate=ID)
    repository = Repository
    environment = Environment
    digest = fields.String(required=True, validate=DIGEST)
    approver = fields.String(required=True, validate=validate.Length(1, 200))
    created_at = fields.String(required=True, validate=RFC3339)
    expires_at = fields.String(required=True, validate=RFC3339)
    withdrawn_at = fields.String(allow_none=True, validate=RFC3339)
    hotfix = fields.Boolean()


class VerificationRecordSchema(_Record):
    id = fields.String(required=True, validate=ID)
    repository = Repository
    environment = Environment
    digest = fields.String(required=True, validate=DIGEST)
    name = fields.String(required=True, validate=validate.Length(1, 63))
    result = fields.String(required=True, validate=validate.OneOf(["passed", "failed"]))
    created_at = fields.String(required=True, validate=RFC3339)


class TokenRecordSchema(_Record):
    id = fields.String(required=True, validate=ID)
    name = fields.String(required=True, validate=validate.Length(1, 200))
    role = fields.String(required=True, validate=validate.OneOf(["reader", "ci", "admin"]))
    hash = fields.String(required=True, validate=HASH)
    repositories = fields.List(fields.String(), allow_none=True)
    environments = fields.List(fields.String(), allow_none=True)
    expires_at = fields.String(allow_none=True, validate=RFC3339)
    created_at = fields.String(required=True, validate=RFC3339)


class SubscriptionRecordSchema(_Record):
    id = fields.String(required=True, validate=ID)
    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    events = fields.List(fields.String(), required=True)
    secret = fields.String(required=True, validate=validate.Length(1, 1000))
    created_at = fields.String(required=True, validate=RFC3339)


class PointerSchema(StrictSchema):
    digest = fields.String(required=True, validate=DIGEST)
    promotion_id = fields.String(required=True, validate=ID)
    promoted_at = fields.String(required=True, validate=RFC3339)
    tags = fields.List(fields.String(), required=True)


class BindingValueSchema(StrictSchema):
    digest = fields.String(required=True, validate=DIGEST)
    bound_at = fields.String(required=True, allow_none=True, validate=RFC3339)
    bound_by = fields.String(required=True, allow_none=True)


class _Line(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))


class HeaderLineSchema(_Line):
    version = fields.Integer(required=True, strict=True, validate=validate.Equal(
        VERSION, error=f"this gateway restores backup version {VERSION}"))
    created_at = fields.String(required=True, validate=RFC3339)
    cut = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True))


class PolicyLineSchema(_Line):
    policy = fields.Dict(required=True)


class TokenLineSchema(_Line):
    token = fields.Nested(TokenRecordSchema, required=True)


class SubscriptionLineSchema(_Line):
    subscription = fields.Nested(SubscriptionRecordSchema, required=True)


class PromotionLineSchema(_Line):
    id = fields.String(required=True, validate=STREAM_ID)
    record = fields.Nested(PromotionRecordSchema, required=True)


class PointerLineSchema(_Line):
    repository = Repository
    environment = Environment
    pointer = fields.Nested(PointerSchema, required=True)


class BindingLineSchema(_Line):
    repository = Repository
    tag = fields.String(required=True, validate=_tag)
    binding = fields.Nested(BindingValueSchema, required=True)


class ApprovalLineSchema(_Line):
    id = fields.String(required=True, validate=STREAM_ID)
    approval = fields.Nested(ApprovalRecordSchema, required=True)


class VerificationLineSchema(_Line):
    id = fields.String(required=True, validate=STREAM_ID)
    verification = fields.Nested(VerificationRecordSchema, required=True)


class ReferrerLineSchema(_Line):
    repository = Repository
    digest = fields.String(required=True, validate=DIGEST)
    subject = fields.String(required=True, allow_none=True, validate=DIGEST)
    descriptor = fields.Dict(required=True, allow_none=True)

    @validates_schema
    def subject_and_descriptor(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("subject") and data.get("descriptor") is None:
            raise ValidationError("a referrer of a subject needs its descriptor", "descriptor")


class FooterLineSchema(_Line):
    counts = fields.Dict(keys=fields.String(validate=validate.OneOf(KINDS)),
                         values=fields.Integer(strict=True, validate=validate.Range(min=0)),
                         required=True)


LINE_SCHEMAS: dict[str, type[Schema]] = {
    "header": HeaderLineSchema, "policy": PolicyLineSchema, "token": TokenLineSchema,
    "subscription": SubscriptionLineSchema, "promotion": PromotionLineSchema,
    "pointer": PointerLineSchema, "binding": BindingLineSchema,
    "approval": ApprovalLineSchema, "verification": VerificationLineSchema,
    "referrer": ReferrerLineSchema, "footer": FooterLineSchema,
}


class RestoreQueryArgsSchema(StrictSchema):
    """How a restore treats a store that already holds governance state."""

    mode = fields.String(load_default="empty-only",
                         validate=validate.OneOf(["empty-only", "replace"]), metadata={
                             "description": "`empty-only` (default): 409 unless the store "
                                            "holds no governance state; `replace`: clear the "
                                            "governance state, then load the backup"})


class RestoreResultSchema(Schema):
    """What a restore loaded."""

    restored = fields.Dict(keys=fields.String(), values=fields.Integer())
    backup_created_at = fields.String()
    mode = fields.String()
    reconciliation = fields.String(metadata={
        "description": "`queued`: the next reconciliation pass compares every environment "
                       "with the registry and records what changed since the backup "
                       "(`kind: reconciled` promotion records, `restore.reconciled` events)"})
