"""Optional collaborators plugged into Services (scans, deliveries) once they exist."""

from __future__ import annotations

from service.services import Services


def wire(svc: Services) -> Services:
    """Attach the pieces other modules look up in `svc.extra`."""
    from service.deliveries import fan_out
    from service.scans import scan_on_push

    svc.extra["deliver"] = lambda event_type, data: fan_out(svc, event_type, data)
    svc.extra["scans"] = svc.scans
    svc.extra["scan_on_push"] = lambda repository, digest: scan_on_push(svc, repository, digest)
    return svc
