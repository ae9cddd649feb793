"""Retention jobs: one run (on demand or scheduled), and the per-minute schedule tick."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from service.core import retention
from service.core.jobs import enqueue_retention_tick
from workers.context import services

log = logging.getLogger("tagwarden.retention")


def run_retention(run_id: str) -> dict[str, Any]:
    """Execute one retention run (its record says which repositories and whether dry)."""
    return retention.execute(services(), run_id)


def tick() -> list[str]:
    """Start the retention runs whose schedule has come, then queue the next tick."""
    svc = services()
    try:
        started = [run["id"] for run in retention.due(svc, datetime.now(UTC))]
    finally:
        enqueue_retention_tick(svc.queue)
    if started:
        log.info("scheduled retention runs started: %s", started)
    return started
