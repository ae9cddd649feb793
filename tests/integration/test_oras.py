"""The `oras` Python SDK through the gateway, called as the README shows (basic auth)."""

from __future__ import annotations

from pathlib import Path

import oras.client

from testkit.procs import ADMIN_TOKEN
from tests.integration.conftest import Stack


def test_oras_push_and_pull_with_basic_auth(stack: Stack, tmp_path: Path):
    artifact = tmp_path / "notes.txt"
    artifact.write_text("release notes\n")
    client = oras.client.OrasClient(hostname=stack.gw, insecure=True, auth_backend="basic")
    client.login(username="ci", password=ADMIN_TOKEN, hostname=stack.gw)
    pushed = client.push(target=f"{stack.gw}/oras/demo:v1.0.0", files=[str(artifact)],
                         disable_path_validation=True)
    assert pushed.status_code == 201
    out = tmp_path / "out"
    files = client.pull(target=f"{stack.gw}/oras/demo:v1.0.0", outdir=str(out))
    assert [Path(f).read_text() for f in files] == ["release notes\n"]
    assert client.get_tags(f"{stack.gw}/oras/demo") == ["v1.0.0"]
