"""Scheduled backups: one into TAGWARDEN_BACKUP_DIR, the oldest beyond TAGWARDEN_BACKUP_KEEP
removed, then the next one queued."""

from __future__ import annotations

import logging
from typing import Any

from service.core import backup
from service.core.jobs import enqueue_backup
from workers.context import services

log = logging.getLogger("tagwarden.backup")


def scheduled_backup() -> dict[str, Any] | None:
    """Write one backup (when a directory is configured) and queue the next."""
    svc = services()
    settings = svc.settings
    if not settings.backup_dir:
        return None
    try:
        return backup.scheduled(svc, settings.backup_dir, settings.backup_keep)
    finally:
        enqueue_backup(svc.queue, settings.backup_interval)
