"""Who is on the other end of a request: the one client address the gateway trusts.

`X-Forwarded-For` is written by whoever sends the request, so it names nobody unless a proxy
we trust wrote it. Without TAGWARDEN_TRUST_FORWARDED the client is the TCP peer and the
header is ignored. With it, the gateway trusts exactly one proxy hop (as werkzeug's
`ProxyFix(x_for=1)` does): the proxy in front appends the address it saw as the last entry,
and everything to its left is what the client claimed, never used. Rate limits, the access
log and the `X-Forwarded-For` sent to the registry (whose notifications report its first
entry as `request.addr`) all use this one address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any


def _ip(value: str) -> str | None:
    """The address in canonical form, or None when `value` is not an IP address."""
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        return None


def peer_address(environ: Mapping[str, Any]) -> str:
    """The TCP peer (REMOTE_ADDR), '' when the server gave none (a unix socket)."""
    return str(environ.get("REMOTE_ADDR") or "")


def client_address(environ: Mapping[str, Any], trust_forwarded: bool) -> str:
    """The trusted client address: the peer, or the last X-Forwarded-For entry (the one the
    trusted proxy appended) when forwarding headers are trusted and it is an IP address."""
    peer = peer_address(environ)
    if not trust_forwarded:
        return peer
    hops = str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")
    return _ip(hops[-1]) or peer


def forwarded_for(environ: Mapping[str, Any], trust_forwarded: bool) -> str:
    """The X-Forwarded-For to send upstream: the trusted client, then the peer when that is
    a different hop (a trusted proxy) — never an entry only the client vouched for."""
    client = client_address(environ, trust_forwarded)
    peer = peer_address(environ)
    return client if not peer or client == peer else f"{client}, {peer}"

