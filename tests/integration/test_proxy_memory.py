"""A 256 MiB blob through the gateway both ways keeps the gateway's memory flat."""

from __future__ import annotations

import hashlib

from testkit.procs import PeakRss
from tests.integration.conftest import V2, Stack

MIB = 1024 * 1024
SIZE = 256 * MIB


def _chunks(seed: bytes, total: int, digest: hashlib._Hash):
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    sent = 0
    counter = 0
    while sent < total:
        # vary each MiB so nothing upstream can deduplicate or compress it away
        chunk = counter.to_bytes(8, "big") + block[8:]
        counter += 1
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


def test_large_blob_streams_with_flat_gateway_memory(stack: Stack):
    # warm up: imports, pools and threads exist before the baseline is taken
    V2.get(f"{stack.gw_url}/v2/", timeout=10)
    baseline = stack.gateway.rss()
    upload = V2.post(f"{stack.gw_url}/v2/team/big/blobs/uploads/", timeout=10)
    assert upload.status_code == 202
    digest = hashlib.sha256()
    with PeakRss(stack.gateway.pid) as push_peak:
        patched = V2.patch(upload.headers["Location"],
                                 data=_chunks(b"big", SIZE, digest), timeout=300)
        assert patched.status_code == 202, patched.text
        ref = "sha256:" + digest.hexdigest()
        done = V2.put(f"{patched.headers['Location']}&digest={ref}", timeout=60)
        assert done.status_code == 201, done.text

    received = hashlib.sha256()
    size = 0
    with PeakRss(stack.gateway.pid) as pull_peak:
        with V2.get(f"{stack.gw_url}/v2/team/big/blobs/{ref}", stream=True,
                          timeout=300) as resp:
            assert resp.status_code == 200
            assert resp.headers["Content-Length"] == str(SIZE)
            for chunk in resp.iter_content(MIB):
                received.update(chunk)
                size += len(chunk)
    assert size == SIZE
    assert "sha256:" + received.hexdigest() == ref
    growth = max(push_peak.peak, pull_peak.peak) - baseline
    print(f"baseline {baseline / MIB:.1f} MiB, growth {growth / MIB:.1f} MiB")
    assert growth < 64 * MIB, f"gateway RSS grew by {growth / MIB:.1f} MiB"
