"""Availability faults on real processes: pulls through a Redis outage, a Sentinel failover."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from service.store.tokens import ROSTER_REFRESH
from tests.faults.conftest import report, start_fault_stack
from tests.faults.test_faults import _history, _pointer, _policy, _push, _registry_tag
from tests.helpers import oci, procs
from tests.integration.conftest import Stack
from tests.integration.test_webhooks import wait_for

# the gateway's deadline for one Redis command (TAGWARDEN_REDIS_TIMEOUT) in these scenarios
REDIS_TIMEOUT = 0.5
# a write answers within one Redis deadline (then the breaker answers at once) plus as much
# again for HTTP: the client gives up after this
WRITE_DEADLINE = 2 * REDIS_TIMEOUT
# how long Redis stays away (seconds; TAGWARDEN_FAULT_OUTAGE shortens it for a quick run):
# longer than the token cache's refresh, so pulls are served by the stale cache alone
OUTAGE = float(os.environ.get("TAGWARDEN_FAULT_OUTAGE", "60"))
# writes may be refused this long after the primary dies: Sentinel's down-after (4 s), the
# election, the old primary's return as a replica (WAIT needs one), with margin
FAILOVER_DEADLINE = 15.0
ACCEPT = f"{oci.OCI_MANIFEST}, {oci.OCI_INDEX}"


def _token(stack: Stack, role: str) -> tuple[str, str]:
    """(id, secret) of a new stored token."""
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/tokens", timeout=10, json={
        "name": f"ha-{role}-{uuid.uuid4().hex[:6]}", "role": role})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["token"]


def _pull(gw_url: str, secret: str, repo: str, tag: str) -> list[tuple[str, int]]:
    """One pull as a client does it, each request on a new connection (any gateway
    process may answer): ping, manifest GET and HEAD, every blob, tag list, catalog."""
    auth = ("puller", secret)
    out = [("ping", requests.get(f"{gw_url}/v2/", auth=auth, timeout=10).status_code)]
    manifest = requests.get(f"{gw_url}/v2/{repo}/manifests/{tag}", auth=auth, timeout=10,
                            headers={"Accept": ACCEPT})
    out.append(("manifest", manifest.status_code))
    out.append(("manifest HEAD", requests.head(f"{gw_url}/v2/{repo}/manifests/{tag}", auth=auth,
                                               timeout=10, headers={"Accept": ACCEPT}
                                               ).status_code))
    if manifest.status_code == 200:
        body = manifest.json()
        for blob in [body["config"], *body["layers"]]:
            got = requests.get(f"{gw_url}/v2/{repo}/blobs/{blob['digest']}", auth=auth,
                               timeout=10)
            out.append(("blob", got.status_code if oci.sha256_digest(got.content) == blob["digest"]
                        else -got.status_code))
    out.append(("tags", requests.get(f"{gw_url}/v2/{repo}/tags/list", auth=auth,
                                     timeout=10).status_code))
    out.append(("catalog", requests.get(f"{gw_url}/v2/_catalog", auth=auth,
                                        timeout=10).status_code))
    return out


def _writes(gw_url: str, ci: str, admin: str, repo: str, manifest: bytes) -> list[tuple[str, int]]:
    """Every kind of write, each with the client giving up after WRITE_DEADLINE (0 then)."""
    calls = [
        ("blob upload", "POST", f"/v2/{repo}/blobs/uploads/", ("ci", ci), {}, None),
        ("manifest push", "PUT", f"/v2/{repo}/manifests/v9.9.9", ("ci", ci),
         {"Content-Type": oci.OCI_MANIFEST}, manifest),
        ("manifest delete", "DELETE", f"/v2/{repo}/manifests/{oci.sha256_digest(manifest)}",
         ("admin", admin), {}, None),
        ("promotion", "POST", "/api/v1/promotions", None, {"Authorization": f"Bearer {ci}"},
         json.dumps({"repository": repo, "environment": "develop", "tag": "v1.0.0"})),
        ("token", "POST", "/api/v1/tokens", None, {"Authorization": f"Bearer {admin}"},
         json.dumps({"name": "during-outage", "role": "reader"})),
    ]
    out = []
    for name, method, path, auth, headers, body in calls:
        if body is not None and "Content-Type" not in headers:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            status = requests.request(method, gw_url + path, auth=auth, headers=headers,
                                      data=body, timeout=WRITE_DEADLINE).status_code
        except requests.RequestException:
            status = 0
        out.append((name, status))
    return out


def _outage(stack: Stack, tokens: dict[str, str], repo: str, manifest: bytes,
            seconds: float) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]]]:
    """Pull with every token and try every write, in turn, for `seconds`."""
    pulls, writes = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for role, secret in tokens.items():
            pulls += [(role, what, status)
                      for what, status in _pull(stack.gw_url, secret, repo, "v1.0.0")]
        writes += _writes(stack.gw_url, tokens["ci"], tokens["admin"], repo, manifest)
    return pulls, writes


def _normal(stack: Stack, tokens: dict[str, str], repo: str, gateway_pid: int) -> None:
    """After the outage, without a restart: ready, writes work, revocation is immediate."""
    wait_for(lambda: requests.get(f"{stack.gw_url}/readyz", timeout=5).status_code == 200,
             timeout=10, interval=0.2)
    assert stack.gateway.pid == gateway_pid and stack.gateway.proc.poll() is None
    promoted = requests.post(f"{stack.gw_url}/api/v1/promotions", timeout=10, json={
        "repository": repo, "environment": "develop", "tag": "v1.0.0"},
        headers={"Authorization": f"Bearer {tokens['ci']}"})
    assert promoted.status_code == 201, promoted.text
    spare_id, spare = _token(stack, "reader")
    assert all(s == 200 for _, s in _pull(stack.gw_url, spare, repo, "v1.0.0"))
    assert stack.admin().delete(f"{stack.gw_url}/api/v1/tokens/{spare_id}",
                                timeout=10).status_code == 204
    revoked = requests.get(f"{stack.gw_url}/v2/", auth=("puller", spare), timeout=10)
    assert revoked.status_code == 401


@pytest.mark.timeout(int(2 * OUTAGE + 240))
def test_pulls_survive_a_redis_outage_and_writes_fail_fast(tmp_path: Path):
    stack = start_fault_stack(tmp_path, TAGWARDEN_REDIS_TIMEOUT=str(REDIS_TIMEOUT))
    try:
        _policy(stack)
        repo = "ha/pulls"
        image = oci.simple_image("outage")
        _push(stack, tmp_path, image, f"{repo}:v1.0.0")
        manifest = requests.get(f"{stack.gw_url}/v2/{repo}/manifests/v1.0.0",
                                auth=("ci", procs.ADMIN_TOKEN), timeout=10,
                                headers={"Accept": ACCEPT}).content
        tokens = {role: _token(stack, role)[1] for role in ("reader", "ci", "admin")}
        # before: every gateway process learns every token (pulls, then the cache refresh)
        warm_until = time.monotonic() + ROSTER_REFRESH + 2
        while time.monotonic() < warm_until:
            for secret in tokens.values():
                assert all(s == 200 for _, s in _pull(stack.gw_url, secret, repo, "v1.0.0"))
        gateway_pid = stack.gateway.pid
        figures = {}
        for mode in ("SIGSTOP", "stopped"):
            if mode == "SIGSTOP":
                os.kill(stack.redis.pid, signal.SIGSTOP)
            else:
                stack.redis.stop()
            try:
                pulls, writes = _outage(stack, tokens, repo, manifest, OUTAGE)
            finally:
                if mode == "SIGSTOP":
                    os.kill(stack.redis.pid, signal.SIGCONT)
                else:
                    stack.redis.start()
            failed_pulls = [p for p in pulls if p[2] != 200]
            assert failed_pulls == [], failed_pulls[:10]
            assert {status for _, status in writes} == {503}, [w for w in writes
                                                              if w[1] != 503][:10]
            _normal(stack, tokens, repo, gateway_pid)
            figures[mode] = (len(pulls), len(writes))
        report("redis outage (SIGSTOP, then stopped)", seconds_each=OUTAGE,
               pull_requests=sum(p for p, _ in figures.values()), pull_failures=0,
               writes=sum(w for _, w in figures.values()), writes_not_503_within_1s=0,
               restarts=0)
    finally:
        stack.stop()
