"""Hostile callers against the real stack: spoofed addresses, guessed tokens (issue 14).

Real redis-server, docker-registry (whose notifications report `request.addr` and
`actor.name`) and the gateway under gunicorn. Every client here is really 127.0.0.1; the
addresses in `X-Forwarded-For` are what a client claims, and only count on a stack started
with TAGWARDEN_TRUST_FORWARDED=true, where the last entry is the trusted proxy's word.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from testkit import procs
from tests.faults.conftest import start_fault_stack
from tests.faults.test_hostile import OCI_INDEX, empty_index, sha256
from tests.integration.conftest import Stack

LIMIT = 30  # failed authentications per address and window in these stacks
RATE = f"{LIMIT}/hour"  # a window no test run outlasts: outcomes are exact counts
SPOOFED = {"X-Forwarded-For": "203.0.113.66", "X-Real-Ip": "198.51.100.7",
           "Forwarded": "for=198.51.100.8;proto=https;host=evil.example"}
ADMIN = {"Authorization": f"Bearer {procs.ADMIN_TOKEN}"}


def basic(secret: str, user: str = "ci") -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


BAD_BASIC = basic("tw_not-a-real-token-000000000000")
BAD_BEARER = "Bearer tw_not-a-real-token-000000000000"


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError(f"condition not met within {timeout}s")


def new_token(stack: Stack, name: str, role: str = "ci") -> str:
    resp = requests.post(f"{stack.gw_url}/api/v1/tokens", headers=ADMIN, timeout=10,
                         json={"name": name, "role": role})
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def registry_events(stack: Stack, repository: str, action: str, digest: str) -> list[dict]:
    resp = requests.get(f"{stack.gw_url}/api/v1/events", headers=ADMIN, timeout=10,
                        params={"repository": repository, "action": action, "limit": 500})
    assert resp.status_code == 200, resp.text
    return [e for e in resp.json()["items"]
            if e.get("digest") == digest and e.get("source") == "registry"]


def push_and_pull(stack: Stack, auth: str, repository: str, headers: dict[str, str]
                  ) -> tuple[str, requests.Response]:
    """PUT an index by tag and GET it by digest through the gateway with extra headers."""
    body = empty_index(f"{repository}-{time.monotonic_ns()}")
    put = requests.put(f"{stack.gw_url}/v2/{repository}/manifests/v1.0.0", data=body,
                       timeout=10, headers={"Authorization": auth,
                                            "Content-Type": OCI_INDEX, **headers})
    assert put.status_code == 201, put.text
    digest = sha256(body)
    pull = requests.get(f"{stack.gw_url}/v2/{repository}/manifests/{digest}", timeout=10,
                        headers={"Authorization": auth, "Accept": OCI_INDEX, **headers})
    assert pull.status_code == 200, pull.text
    return digest, put


def pushed_and_pulled(stack: Stack, repository: str, digest: str) -> tuple[dict, dict]:
    push = wait_for(lambda: registry_events(stack, repository, "push", digest))[0]
    pull = wait_for(lambda: registry_events(stack, repository, "pull", digest))[0]
    return push, pull


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Clients reach the gateway directly: forwarding headers are not trusted."""
    stack = start_fault_stack(tmp_path_factory.mktemp("net-direct"),
                              TAGWARDEN_AUTH_FAILURE_LIMIT=RATE)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Behind a trusted proxy: the last X-Forwarded-For entry names the client."""
    stack = start_fault_stack(tmp_path_factory.mktemp("net-proxied"),
                              TAGWARDEN_TRUST_FORWARDED="true",
                              TAGWARDEN_AUTH_FAILURE_LIMIT=RATE)
    yield stack
    stack.stop()


# -- item 6: spoofed addresses, events naming the token ---------------------------------------
def test_spoofed_forwarding_headers_name_nobody_in_registry_events(direct: Stack):
    secret = new_token(direct, "net-ci")
    digest, put = push_and_pull(direct, basic(secret), "net/spoof", SPOOFED)
    push, pull = pushed_and_pulled(direct, "net/spoof", digest)
    for event in (push, pull):
        assert event["request"]["addr"] == "127.0.0.1", event
        assert event["actor"] == "net-ci", event
    assert put.headers["Location"].startswith(f"{direct.gw_url}/v2/net/spoof/manifests/")


def test_access_log_names_the_peer_not_the_claimed_address(direct: Stack):
    resp = requests.get(f"{direct.gw_url}/healthz", timeout=10,
                        headers={"X-Request-ID": "net-log-probe", **SPOOFED})
    assert resp.status_code == 200
    line = wait_for(lambda: [x for x in direct.gateway.log.read_text(errors="replace")
                             .splitlines() if "request_id=net-log-probe" in x])[0]
    assert " client=127.0.0.1 " in line, line
    assert "203.0.113.66" not in line


def test_behind_a_trusted_proxy_the_last_hop_names_the_client(proxied: Stack):
    secret = new_token(proxied, "net-proxied-ci")
    claimed = {**SPOOFED, "X-Forwarded-For": "203.0.113.66, 198.51.100.20"}
    digest, _ = push_and_pull(proxied, basic(secret), "net/proxied", claimed)
    push, pull = pushed_and_pulled(proxied, "net/proxied", digest)
    for event in (push, pull):
        # the trusted client first (the registry reports the first entry), then the proxy
        assert event["request"]["addr"] == "198.51.100.20", event
        assert event["actor"] == "net-proxied-ci", event


# -- item 8: failed logins limited per trusted address ----------------------------------------
def attempts(stack: Stack, path: str, auth: str, count: int, xff: str | None = None
             ) -> list[requests.Response]:
    session = requests.Session()
    headers = {"Authorization": auth, **({"X-Forwarded-For": xff} if xff else {})}
    return [session.get(f"{stack.gw_url}{path}", headers=headers, timeout=10)
            for _ in range(count)]


def assert_locked_out_v2(resp: requests.Response) -> None:
    assert resp.status_code == 429, resp.text
    assert resp.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert resp.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert 1 <= int(resp.headers["Retry-After"]) <= 3600


def test_300_bad_tokens_on_v2_lock_the_address_out(proxied: Stack):
    replies = attempts(proxied, "/v2/", BAD_BASIC, 300, xff="198.51.100.1")
    assert Counter(r.status_code for r in replies) == {401: LIMIT, 429: 300 - LIMIT}
    assert [r.status_code for r in replies[:LIMIT]] == [401] * LIMIT
    assert_locked_out_v2(replies[-1])
    # the lockout holds for a correct token too, on /v2 and on the API
    good = basic(procs.ADMIN_TOKEN)
    assert_locked_out_v2(attempts(proxied, "/v2/", good, 1, xff="198.51.100.1")[0])
    api = attempts(proxied, "/api/v1/policies", ADMIN["Authorization"], 1, xff="198.51.100.1")[0]
    assert api.status_code == 429
    assert api.json()["code"] == "rate_limited"
    # an anonymous probe is not an attempt: it still gets the challenge
    anonymous = requests.get(f"{proxied.gw_url}/v2/", timeout=10,
                             headers={"X-Forwarded-For": "198.51.100.1"})
    assert anonymous.status_code == 401
    # another address is untouched
    assert attempts(proxied, "/v2/", good, 1, xff="198.51.100.2")[0].status_code == 200
    assert attempts(proxied, "/v2/", BAD_BASIC, 1, xff="198.51.100.2")[0].status_code == 401


def test_300_bad_tokens_on_the_api_lock_the_address_out(proxied: Stack):
    replies = attempts(proxied, "/api/v1/policies", BAD_BEARER, 300, xff="198.51.100.3")
    assert Counter(r.status_code for r in replies) == {401: LIMIT, 429: 300 - LIMIT}
    last = replies[-1]
    assert last.json()["code"] == "rate_limited"
    assert 1 <= int(last.headers["Retry-After"]) <= 3600
    v2 = attempts(proxied, "/v2/", basic(procs.ADMIN_TOKEN), 1, xff="198.51.100.3")[0]
    assert_locked_out_v2(v2)


def test_successful_logins_never_count(proxied: Stack):
    good = attempts(proxied, "/v2/", basic(procs.ADMIN_TOKEN), 3 * LIMIT, xff="198.51.100.4")
    assert {r.status_code for r in good} == {200}
    bad = attempts(proxied, "/v2/", BAD_BASIC, LIMIT, xff="198.51.100.4")
    assert [r.status_code for r in bad] == [401] * LIMIT
    assert_locked_out_v2(attempts(proxied, "/v2/", BAD_BASIC, 1, xff="198.51.100.4")[0])


def test_a_client_cannot_escape_the_limit_by_claiming_other_addresses(tmp_path: Path):
    stack = start_fault_stack(tmp_path, worker=False, TAGWARDEN_AUTH_FAILURE_LIMIT=RATE)
    try:
        session = requests.Session()
        codes = [session.get(f"{stack.gw_url}/v2/", timeout=10, headers={
            "Authorization": BAD_BASIC, "X-Forwarded-For": f"198.51.100.{i % 250 + 1}",
            "X-Real-Ip": f"192.0.2.{i % 250 + 1}"}).status_code for i in range(300)]
        assert Counter(codes) == {401: LIMIT, 429: 300 - LIMIT}
        assert_locked_out_v2(requests.get(f"{stack.gw_url}/v2/", timeout=10, headers={
            "Authorization": basic(procs.ADMIN_TOKEN), "X-Forwarded-For": "192.0.2.200"}))
    finally:
        stack.stop()


def test_the_limiter_fails_open_without_redis(tmp_path: Path):
    stack = start_fault_stack(tmp_path, worker=False, TAGWARDEN_AUTH_FAILURE_LIMIT=RATE)
    try:
        stack.redis.stop()
        # the bootstrap admin token needs no Redis: the limiter must not stand in its way
        ok = requests.get(f"{stack.gw_url}/v2/", timeout=10,
                          headers={"Authorization": basic(procs.ADMIN_TOKEN)})
        assert ok.status_code == 200, ok.text
        # a stored token cannot be checked without Redis: 503, never a 500
        bad = requests.get(f"{stack.gw_url}/v2/", timeout=10,
                           headers={"Authorization": BAD_BASIC})
        assert bad.status_code == 503, bad.text
        assert json.loads(bad.text)["errors"][0]["code"] == "UNAVAILABLE"
        api = requests.get(f"{stack.gw_url}/api/v1/policies", timeout=10,
                           headers={"Authorization": BAD_BEARER})
        assert (api.status_code, api.json()["code"]) == (503, "store_unavailable")
    finally:
        stack.stop()
