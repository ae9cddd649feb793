"""The /api/v1 blueprints (flask-smorest: marshmallow schemas become the OpenAPI spec)."""

from __future__ import annotations

from flask import current_app

from service.services import Services


def svc() -> Services:
    """The process's services (built once by the app factory)."""
    return current_app.extensions["tagwarden"]
