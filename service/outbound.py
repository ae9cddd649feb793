"""SSRF guard for outgoing webhooks: only http(s), and no internal address unless allowed."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from service.domain.errors import InvalidRequest


def _allowed(host: str, addresses: list[ipaddress._BaseAddress], allowlist: tuple[str, ...]
             ) -> bool:
    host = host.lower()
    for item in allowlist:
        if "/" in item:
            network = ipaddress.ip_network(item, strict=False)
            if addresses and all(a in network for a in addresses):
                return True
        elif item == host or (addresses and any(str(a) == item for a in addresses)):
            return True
    return False


def _internal(address: ipaddress._BaseAddress) -> bool:
    return (address.is_loopback or address.is_link_local or address.is_private
            or address.is_reserved or address.is_multicast or address.is_unspecified)


def resolve(host: str, port: int) -> list[ipaddress._BaseAddress]:
    """Every address a host name resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def check_url(url: str, allowlist: tuple[str, ...], field: str = "url") -> str:
    """The URL if it may be called; InvalidRequest naming why not."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.port == 0:
            raise ValueError("Port 0 cannot be connected to")
    except ValueError as exc:  # a port out of 0-65535 or not a number, a bad [IPv6] host
        raise InvalidRequest(f"invalid URL: {exc}", errors={field: [f"invalid URL: {exc}"]}
                             ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("subscription URLs must be http(s) with a host",
                             errors={field: ["must be an http or https URL"]})
    if parts.username or parts.password:
        raise InvalidRequest("credentials in the URL are not allowed; use the secret",
                             errors={field: ["must not contain user:password"]})
    addresses = resolve(parts.hostname, port)
    if _allowed(parts.hostname, addresses, allowlist):
        return url
    if not addresses:
        raise InvalidRequest(f"host {parts.hostname!r} does not resolve",
                             errors={field: ["host does not resolve"]})
    if any(_internal(a) for a in addresses):
        raise InvalidRequest(
            f"{parts.hostname} resolves to an internal address; add it to "
            "TAGWARDEN_OUTBOUND_ALLOWLIST to allow it",
            errors={field: ["internal addresses are refused unless allow-listed"]})
    return url
