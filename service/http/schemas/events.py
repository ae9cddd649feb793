"""Registry events, subscriptions and deliveries."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates

from service.core.deliveries import EVENT_TYPES
from service.http.schemas.common import PageQueryArgsSchema, StrictSchema, page_of


class EventQueryArgsSchema(PageQueryArgsSchema):
    """Filters of the event log."""

    repository = fields.String(validate=validate.Length(min=1, max=255))
    action = fields.String(validate=validate.Length(min=1, max=64))


class EventSchema(Schema):
    """A recorded registry event or finding (drift.detected, push.denied)."""

    id = fields.String()
    action = fields.String()
    repository = fields.String(allow_none=True)
    timestamp = fields.String(allow_none=True)
    digest = fields.String(allow_none=True)
    tag = fields.String(allow_none=True)
    media_type = fields.String(allow_none=True)
    size = fields.Integer(allow_none=True)
    from_repository = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)
    source = fields.String(allow_none=True)
    request = fields.Dict(allow_none=True)
    operation = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    policy = fields.String(allow_none=True)
    violations = fields.List(fields.Dict())
    kind = fields.String(allow_none=True)
    expected_digest = fields.String(allow_none=True)
    found_digest = fields.String(allow_none=True)
    on_drift = fields.String(allow_none=True)
    restored = fields.Boolean()
    error = fields.String(allow_none=True)


class WebhookResultSchema(Schema):
    """What the receiver did with an envelope."""

    accepted = fields.Integer()
    duplicates = fields.Integer()
    skipped = fields.Integer()


class SubscriptionCreateSchema(StrictSchema):
    """A new outgoing webhook."""

    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                     validate=validate.Length(max=2048))
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True,
                         validate=validate.Length(min=1))
    secret = fields.String(required=True, load_only=True, validate=validate.Length(min=16,
                                                                                  max=256))
    repositories = fields.List(fields.String(validate=validate.Length(min=1, max=255)),
                               load_default=["*"], validate=validate.Length(min=1, max=100))

    @validates("events")
    def _unique(self, value: list[str], **_: object) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("duplicate event types")


class SubscriptionSchema(Schema):
    """A subscription (its secret is never shown)."""

    id = fields.String()
    url = fields.String(metadata={"description": "shown to admins only (it may hold a "
                                                 "credential)"})
    events = fields.List(fields.String())
    repositories = fields.List(fields.String())
    created_at = fields.String()
    actor = fields.String(allow_none=True)


class AttemptSchema(Schema):
    """One try at a delivery."""

    at = fields.String()
    status = fields.Integer(allow_none=True)
    error = fields.String(allow_none=True)
    response = fields.String(allow_none=True,
                             metadata={"description": "the body received; admins only"})


class DeliverySchema(Schema):
    """One delivery: its status and attempts."""

    id = fields.String()
    subscription_id = fields.String()
    event = fields.String()
    status = fields.String()
    created_at = fields.String()
    attempts = fields.List(fields.Nested(AttemptSchema))
    payload = fields.String(metadata={"description": "the body sent; admins only"})


EventPageSchema = page_of(EventSchema, "EventPage")
SubscriptionPageSchema = page_of(SubscriptionSchema, "SubscriptionPage")
DeliveryPageSchema = page_of(DeliverySchema, "DeliveryPage")
