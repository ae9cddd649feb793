"""Which registry events a worker must process, and which the receiver records itself."""

from __future__ import annotations

import pytest

from service.core.webhooks import needs_processing

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST = "sha256:" + "1" * 64


@pytest.mark.parametrize(("event", "expected"), [
    ({"action": "push", "media_type": MANIFEST, "digest": DIGEST, "tag": "v1"}, True),
    ({"action": "push", "media_type": MANIFEST, "digest": DIGEST}, True),  # index child
    ({"action": "delete", "digest": DIGEST}, True),
    ({"action": "delete", "tag": "v1"}, True),
    ({"action": "push", "media_type": "application/octet-stream", "digest": DIGEST}, False),
    ({"action": "push", "media_type": MANIFEST, "digest": None}, False),
    ({"action": "pull", "media_type": MANIFEST, "digest": DIGEST, "tag": "v1"}, False),
    ({"action": "mount", "media_type": "application/octet-stream", "digest": DIGEST}, False),
])
def test_only_manifest_pushes_and_deletes_go_to_the_workers(event, expected):
    assert needs_processing(event) is expected
