"""Tagwarden: a governance gateway in front of a Docker Registry v2."""

from __future__ import annotations

from typing import Any


def create_app(config: Any = None) -> Any:
    """The Flask application (imported lazily so workers never import Flask)."""
    from service.http.app import create_app as _create_app

    return _create_app(config)
