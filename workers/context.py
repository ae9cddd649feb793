"""The services of a worker process, built once from the environment."""

from __future__ import annotations

import functools

from service.config import Settings
from service.services import Services
from service.store import TIMEOUT


@functools.cache
def services() -> Services:
    """Per-process services for jobs (same stores and registry client as the gateway)."""
    return Services.build(Settings.from_env(), timeout=TIMEOUT)  # jobs may wait longer
