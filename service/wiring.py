"""Optional collaborators plugged into Services (scans, deliveries) once they exist."""

from __future__ import annotations

from service.services import Services


def wire(svc: Services) -> Services:
    """Attach the pieces other modules look up in `svc.extra`."""
    return svc
