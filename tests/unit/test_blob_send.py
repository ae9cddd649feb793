"""How a blob from the registry's storage is sent (TAGWARDEN_BLOB_SEND)."""

from __future__ import annotations

import io

import pytest

from service.http.v2.local_pulls import copied, sends_copy


@pytest.mark.parametrize(("mode", "peer", "copy"), [
    ("auto", "127.0.0.1", True), ("auto", "127.8.9.10", True), ("auto", "::1", True),
    ("auto", "10.1.2.3", False), ("auto", "2001:db8::1", False), ("auto", "", False),
    ("auto", "not-an-address", False),
    ("copy", "10.1.2.3", True), ("copy", "", True),
    ("sendfile", "127.0.0.1", False),
])
def test_copy_only_to_a_loopback_peer_unless_told(mode: str, peer: str, copy: bool):
    assert sends_copy(mode, {"REMOTE_ADDR": peer}) is copy


def test_copied_sends_exactly_the_range_in_chunks_and_closes_the_file():
    file = io.BytesIO(bytes(range(256)) * 40)
    file.seek(100)
    chunks = list(copied(file, 5000, 2048))
    assert [len(c) for c in chunks] == [2048, 2048, 904]
    assert b"".join(chunks) == (bytes(range(256)) * 40)[100:5100]
    assert file.closed


def test_a_short_file_ends_the_body_and_a_client_gone_closes_it():
    short = io.BytesIO(b"abc")
    assert list(copied(short, 10, 4)) == [b"abc"] and short.closed
    gone = io.BytesIO(b"x" * 100)
    body = copied(gone, 100, 10)
    next(body)
    body.close()  # the server closes the body when the client goes away
    assert gone.closed
