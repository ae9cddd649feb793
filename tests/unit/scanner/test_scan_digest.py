"""Layer digests: a blob is hashed as it streams and refused when it is not what was asked for."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.scanner.errors import ScanError
from service.scanner.inventory import Inventory, inventory_of_streams
from testkit import oci
from testkit import scan_fixtures as fx
from workers.scan import VerifiedBlob

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
LAYER = oci.tar_layer({"etc/os-release": fx.DEBIAN_OS_RELEASE, "blob": os.urandom(300_000)})


class Body:
    """An HTTP response body handing out small chunks: many hashes in flight at once."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(size, 4096))


def scan(data: bytes, digest: str) -> Inventory:
    with ThreadPoolExecutor(max_workers=1) as hasher:
        blob = VerifiedBlob(Body(data), digest, hasher)
        return inventory_of_streams([(digest, LAYER.media_type, blob)], max_bytes=64 * MiB)


def test_a_blob_matching_its_digest_is_scanned() -> None:
    inventory = scan(LAYER.data, LAYER.digest)
    assert inventory.os_release is not None and inventory.os_release.id == "debian"


def test_a_blob_whose_bytes_differ_from_its_digest_fails_the_scan() -> None:
    other = oci.tar_layer({"etc/os-release": fx.DEBIAN_OS_RELEASE, "blob": b"other"})
    with pytest.raises(ScanError, match=f"layer {LAYER.digest} content does not match its digest"):
        scan(other.data, LAYER.digest)
