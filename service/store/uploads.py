"""Blob upload sessions the gateway has seen: repository, bytes received, latest `_state`.

distribution 2.8 ignores `Content-Range` and cancels an upload when a request carries a
stale `_state` (every PATCH answer issues a new one): the gateway keeps each session's offset
and latest state, keyed by the upload uuid, to refuse an out-of-order chunk itself (416) and
to answer a status request with the state the registry last issued.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from service.store import key

# distribution purges upload sessions older than a week (storage.maintenance.uploadpurging)
TTL = 7 * 24 * 3600


def session_key(uuid: str) -> str:
    """The record of one upload session."""
    return key("upload", uuid)


class UploadSessions:
    """uuid → {"repository", "offset", "state"}."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def get(self, uuid: str) -> dict[str, Any] | None:
        """The session as last recorded, or None."""
        raw = self.r.get(session_key(uuid))
        return json.loads(raw) if raw else None

    def put(self, uuid: str, repository: str, offset: int, state: str) -> None:
        """Record where a session stands after an answer of the registry."""
        value = {"repository": repository, "offset": offset, "state": state}
        self.r.set(session_key(uuid), json.dumps(value, separators=(",", ":")), ex=TTL)

    def drop(self, uuid: str) -> None:
        """Forget a finished or cancelled session."""
        self.r.delete(session_key(uuid))
