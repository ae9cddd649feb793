"""The /api/v1 request's JSON body as the request hooks see it: parsed once, never a 500.

Authorization, audit and metrics look into the body before or after the view parses it with
its schema. Whatever a client sends (JSON nested 100,000 deep, bad UTF-8) must come out of
here as None or as an invalid_request naming the problem, not as an exception escaping an
after-request hook.
"""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import HTTPException

from service.domain.errors import InvalidRequest

ENVIRON_KEY = "tagwarden.json_body"


def _parse() -> tuple[Any, str | None]:
    try:
        return request.get_json(silent=True), None  # silent: invalid JSON is None
    except RecursionError:
        return None, "JSON nested too deeply"


def peek_json(strict: bool = False) -> Any:
    """The request's JSON body, or None when there is none or it is not valid JSON.

    `strict` (the authorization hook): InvalidRequest when the body cannot be parsed at all,
    so nothing is authorized without having been read; a body over the size limit raises
    werkzeug's 413 as before. Otherwise failures are None."""
    if not request.is_json:
        return None
    if ENVIRON_KEY not in request.environ:
        try:
            request.environ[ENVIRON_KEY] = _parse()
        except HTTPException:
            if strict:
                raise
            request.environ[ENVIRON_KEY] = (None, None)
    value, problem = request.environ[ENVIRON_KEY]
    if strict and problem:
        raise InvalidRequest(f"request body: {problem}", errors={"body": [problem]})
    return value
