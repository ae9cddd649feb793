"""The /api/v1 blueprints (flask-smorest: marshmallow schemas become the OpenAPI spec)."""

from __future__ import annotations

from flask import current_app, g

from service.core.auth import Principal
from service.domain.errors import NotFound
from service.services import Services
from service.store.pagination import Visible


def svc() -> Services:
    """The process's services (built once by the app factory)."""
    return current_app.extensions["tagwarden"]


def caller() -> Principal:
    """The authenticated caller of this /api/v1 request."""
    principal: Principal = g.principal
    return principal


def listing_scope() -> Visible | None:
    """What listings keep for the caller, by repository (None: everything)."""
    return caller().listing_filter()


def check_visible(repository: str | None, what: str) -> None:
    """NotFound, as for a missing record, when the caller may not see this repository's."""
    if not caller().sees(repository):
        raise NotFound(f"{what} not found")
