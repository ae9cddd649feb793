"""The client address the gateway trusts (issue 14, item 6)."""

from __future__ import annotations

import pytest

from service.http.clientaddr import client_address, forwarded_for

PEER = "10.0.0.9"


@pytest.mark.parametrize(
    ("header", "trust", "client", "upstream"),
    [
        (None, False, PEER, PEER),
        ("203.0.113.66", False, PEER, PEER),  # a claim, not trusted
        ("203.0.113.66, 198.51.100.20", True, "198.51.100.20", f"198.51.100.20, {PEER}"),
        ("198.51.100.20", True, "198.51.100.20", f"198.51.100.20, {PEER}"),
        ("  2001:DB8::1 ", True, "2001:db8::1", f"2001:db8::1, {PEER}"),
        ("198.51.100.20, garbage", True, PEER, PEER),  # not an address: the peer
        ("", True, PEER, PEER),
        (PEER, True, PEER, PEER),
    ],
)
def test_client_and_upstream_forwarded_for(header, trust, client, upstream):
    environ = {"REMOTE_ADDR": PEER}
    if header is not None:
        environ["HTTP_X_FORWARDED_FOR"] = header
    assert client_address(environ, trust) == client
    assert forwarded_for(environ, trust) == upstream
