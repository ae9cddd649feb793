"""Outgoing events: hand them to the subscribers' delivery queue."""

from __future__ import annotations

import logging
from typing import Any

from service.services import Services

log = logging.getLogger("tagwarden.notify")


def emit(svc: Services, event_type: str, payload: dict[str, Any]) -> None:
    """Queue `event_type` for every matching subscription; never fails the caller."""
    from service.core.deliveries import fan_out

    try:
        fan_out(svc, event_type, payload)
    except Exception:  # noqa: BLE001 - a notification never undoes the action it reports
        log.exception("could not queue %s notification", event_type)
