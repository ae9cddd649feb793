"""The post-mortem timeline's query and items."""

from __future__ import annotations

from marshmallow import Schema, fields

from service.http.schemas.common import PageQueryArgsSchema, page_of, utc_representable
from service.http.schemas.promotions import AT_FORMAT, ENVIRONMENT, REPOSITORY, repository_name


def _time(description: str) -> fields.AwareDateTime:
    return fields.AwareDateTime(format="iso", default_timezone=None, validate=utc_representable,
                                error_messages={"invalid": AT_FORMAT,
                                                "invalid_awareness": AT_FORMAT},
                                metadata={"description": description})


class TimelineQueryArgsSchema(PageQueryArgsSchema):
    """Which repository (and environment), and the time window."""

    repository = fields.String(required=True, validate=[REPOSITORY, repository_name])
    environment = fields.String(validate=ENVIRONMENT, metadata={
        "description": "keep this environment's items and the repository-wide ones (pushes, "
                       "scans)"})
    since = _time("from this time on (inclusive)")
    until = _time("up to this time (inclusive)")


class TimelineItemSchema(Schema):
    """One thing that happened."""

    at = fields.String()
    kind = fields.String(metadata={"description": "push, push.denied, promotion, rollback, "
                                                  "hotfix, reconciled, drift, scan, approval, "
                                                  "verification"})
    environment = fields.String()
    digest = fields.String()
    tags = fields.List(fields.String())
    actor = fields.String()
    summary = fields.String()
    ref = fields.String(metadata={"description": "`<type>:<id>` of the record behind it"})


TimelinePageSchema = page_of(TimelineItemSchema, "TimelinePage")
