"""Tokens, roles and scopes on /api/v1 and /v2, revocation, expiry, audit, no raw secrets."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.helpers import oci, procs
from tests.integration.conftest import Stack
from tests.integration.test_promotions import push

POLICY = {"name": "authz", "repositories": ["authz/*", "other/*"],
          "promotion": {"develop": {}, "staging": {}, "production": {}}}


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, dict]:
    """One token per role, plus scoped and expiring ones."""
    assert stack.admin().put(f"{stack.gw_url}/api/v1/policies/authz", json=POLICY,
                             timeout=10).status_code == 200
    specs = {
        "reader": {"role": "reader"},
        "ci": {"role": "ci"},
        "admin": {"role": "admin"},
        "scoped": {"role": "ci", "repositories": ["authz/*"],
                   "environments": ["develop", "staging"]},
        "expiring": {"role": "ci", "expires_at": (datetime.now(UTC) + timedelta(seconds=2))
                     .isoformat()},
    }
    made = {}
    for name, spec in specs.items():
        resp = stack.admin().post(f"{stack.gw_url}/api/v1/tokens",
                                  json={"name": f"t-{name}", **spec}, timeout=10)
        assert resp.status_code == 201, resp.text
        made[name] = resp.json()
        assert made[name]["token"].startswith("tw_") and len(made[name]["token"]) >= 43
    return made


def call(stack: Stack, token: str | None, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{stack.gw_url}{path}", headers=headers, timeout=10,
                            **kwargs)


ROUTES = [
    # method, path, body, minimal role
    ("GET", "/api/v1/policies", None, "reader"),
    ("POST", "/api/v1/policies/evaluate",
     {"action": "push", "repository": "authz/app", "tag": "v1.0.0"}, "reader"),
    ("PUT", "/api/v1/policies/authz-extra", {"name": "authz-extra", "repositories": ["zz/*"]},
     "admin"),
    ("GET", "/api/v1/promotions?repository=authz/app", None, "reader"),
    ("POST", "/api/v1/promotions",
     {"repository": "authz/app", "environment": "develop", "tag": "v1.0.0"}, "ci"),
    ("GET", "/api/v1/environments?repository=authz/app", None, "reader"),
    ("GET", "/api/v1/events", None, "reader"),
    ("GET", "/api/v1/subscriptions", None, "reader"),
    ("POST", "/api/v1/subscriptions",
     {"url": "http://127.0.0.1:9/x", "events": ["scan.completed"], "secret": "z" * 20}, "admin"),
    ("GET", "/api/v1/tokens", None, "admin"),
    ("POST", "/api/v1/tokens", {"name": "made-by-test", "role": "reader"}, "admin"),
    ("GET", "/api/v1/audit", None, "reader"),
]
RANK = {"reader": 1, "ci": 2, "admin": 3}


@pytest.mark.parametrize(("method", "path", "body", "needed"), ROUTES)
def test_each_role_against_each_route(stack: Stack, tokens, tmp_path: Path, method, path, body,
                                      needed):
    push(stack, tmp_path, "authz-app", "authz/app:v1.0.0")
    assert call(stack, None, method, path, json=body).status_code == 401
    assert call(stack, "tw_not-a-real-token", method, path, json=body).status_code == 401
    for role in ("reader", "ci", "admin"):
        resp = call(stack, tokens[role]["token"], method, path, json=body)
        if RANK[role] >= RANK[needed]:
            assert resp.status_code < 400, (role, resp.text)
        else:
            assert resp.status_code == 403, (role, resp.text)
            assert resp.json()["code"] == "forbidden"
            assert needed in resp.json()["message"]


def test_scoped_ci_token_refused_outside_its_repositories_and_environments(
        stack: Stack, tokens, tmp_path: Path):
    push(stack, tmp_path, "authz-scope", "authz/scope:v1.0.0", "other/scope:v1.0.0")
    token = tokens["scoped"]["token"]
    ok = call(stack, token, "POST", "/api/v1/promotions",
              json={"repository": "authz/scope", "environment": "staging", "tag": "v1.0.0"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["actor"] == "t-scoped"
    prod = call(stack, token, "POST", "/api/v1/promotions",
                json={"repository": "authz/scope", "environment": "production",
                      "tag": "v1.0.0"})
    assert prod.status_code == 403 and "production" in prod.json()["message"]
    other = call(stack, token, "POST", "/api/v1/promotions",
                 json={"repository": "other/scope", "environment": "develop", "tag": "v1.0.0"})
    assert other.status_code == 403 and "other/scope" in other.json()["message"]
    layout = oci.write_layout(tmp_path / "s", {"img": oci.simple_image("scoped-push")})
    denied = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/other/scope:v2.0.0",
                             creds=f"ci:{token}")
    assert denied.returncode != 0
    allowed = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/authz/scope:v2.0.0",
                              creds=f"ci:{token}")
    assert allowed.returncode == 0, allowed.stderr


def test_expired_and_revoked_tokens_are_refused(stack: Stack, tokens):
    import time

    expiring = tokens["expiring"]["token"]
    time.sleep(max(0.0, datetime.fromisoformat(tokens["expiring"]["expires_at"].replace(
        "Z", "+00:00")).timestamp() - time.time() + 0.2))
    assert call(stack, expiring, "GET", "/api/v1/policies").status_code == 401
    fresh = stack.admin().post(f"{stack.gw_url}/api/v1/tokens",
                               json={"name": "t-revoked", "role": "reader"}, timeout=10).json()
    assert call(stack, fresh["token"], "GET", "/api/v1/policies").status_code == 200
    assert stack.admin().delete(f"{stack.gw_url}/api/v1/tokens/{fresh['id']}",
                                timeout=10).status_code == 204
    assert call(stack, fresh["token"], "GET", "/api/v1/policies").status_code == 401
    past = stack.admin().post(f"{stack.gw_url}/api/v1/tokens", json={
        "name": "t-past", "role": "reader", "expires_at": "2001-01-01T00:00:00Z"}, timeout=10)
    assert past.status_code == 400


def test_skopeo_login_push_pull_with_token_refused_without(stack: Stack, tokens, tmp_path):
    ci = tokens["ci"]["token"]
    reader = tokens["reader"]["token"]
    image = oci.simple_image("authz-login")
    layout = oci.write_layout(tmp_path / "l", {"img": image})
    authfile = tmp_path / "auth.json"
    login = subprocess.run(["skopeo", "login", "--tls-verify=false", "--authfile", str(authfile),
                            "-u", "ci", "--password-stdin", stack.gw], input=ci,
                           capture_output=True, text=True, timeout=60)
    assert login.returncode == 0, login.stderr
    pushed = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/authz/login:v1.0.0",
                             creds="", extra=["--authfile", str(authfile)])
    assert pushed.returncode == 0, pushed.stderr
    bad_login = subprocess.run(["skopeo", "login", "--tls-verify=false", "--authfile",
                                str(tmp_path / "bad.json"), "-u", "ci", "--password-stdin",
                                stack.gw], input="tw_wrong", capture_output=True, text=True,
                               timeout=60)
    assert bad_login.returncode != 0
    anonymous = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/authz/login:v1.0.1",
                                creds="")
    assert anonymous.returncode != 0
    assert "authentication required" in anonymous.stderr.lower() or "401" in anonymous.stderr
    reader_push = oci.skopeo_copy(f"oci:{layout}:img",
                                  f"docker://{stack.gw}/authz/login:v1.0.2", creds=f"r:{reader}")
    assert reader_push.returncode != 0
    pulled = oci.skopeo_copy(f"docker://{stack.gw}/authz/login:v1.0.0", f"oci:{tmp_path / 'p'}:x",
                             creds=f"r:{reader}")
    assert pulled.returncode == 0, pulled.stderr
    no_creds = requests.get(f"{stack.gw_url}/v2/", timeout=10)
    assert no_creds.status_code == 401
    assert no_creds.headers["WWW-Authenticate"] == 'Basic realm="tagwarden"'
    assert no_creds.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert no_creds.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_every_mutating_call_is_audited_with_its_actor(stack: Stack, tokens, tmp_path: Path):
    admin = tokens["admin"]["token"]
    assert call(stack, admin, "PUT", "/api/v1/policies/audited", json={
        "name": "audited", "repositories": ["audited/*"]}).status_code == 200
    assert call(stack, admin, "DELETE", "/api/v1/policies/audited").status_code == 204
    layout = oci.write_layout(tmp_path / "a", {"img": oci.simple_image("audit-denied")})
    assert oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/authz/audit:production",
                           creds=f"ci:{tokens['ci']['token']}").returncode != 0
    entries = call(stack, admin, "GET", "/api/v1/audit?limit=500").json()["items"]
    by_action = {}
    for entry in entries:
        by_action.setdefault(entry["action"], entry)
    assert by_action["policy.put"]["actor"]["name"] == "t-admin"
    assert by_action["policy.put"]["target"]["name"] == "audited"
    assert by_action["policy.delete"]["outcome"] == "success"
    assert by_action["token.create"]["actor"]["name"] == "admin (bootstrap)"
    assert by_action["push.denied"]["actor"]["name"] == "t-ci"
    assert by_action["push.denied"]["target"]["tag"] == "production"
    promotions = {(e["target"].get("repository"), e["target"].get("environment"), e["outcome"])
                  for e in entries if e["action"] == "promotion.create"}
    assert ("authz/scope", "staging", "success") in promotions
    assert ("other/scope", "develop", "denied") in promotions
    filtered = call(stack, admin, "GET", "/api/v1/audit?action=policy.delete").json()["items"]
    assert {e["action"] for e in filtered} == {"policy.delete"}


def test_redis_holds_no_raw_token(stack: Stack, tokens):
    import redis

    secrets = [t["token"].encode() for t in tokens.values()] + [procs.ADMIN_TOKEN.encode()]
    client = redis.Redis(port=stack.redis.port)  # bytes: RQ stores compressed job data
    for name in client.scan_iter(count=1000):
        kind = client.type(name).decode()
        if kind == "string":
            values = [client.get(name)]
        elif kind == "hash":
            values = [*client.hkeys(name), *client.hvals(name)]
        elif kind == "stream":
            values = [str(f) for _, f in client.xrange(name)]
        elif kind == "set":
            values = list(client.smembers(name))
        elif kind == "list":
            values = client.lrange(name, 0, -1)
        else:
            values = []
        blob = name + b" ".join(v if isinstance(v, bytes) else str(v).encode()
                                for v in values)
        if kind == "hash" and b"rq:job:" in name:
            import zlib

            for field in (b"data",):
                raw = client.hget(name, field)
                if raw:
                    try:
                        blob += zlib.decompress(raw)
                    except zlib.error:
                        blob += raw
        for secret in secrets:
            assert secret not in blob, f"raw token found in {name}"
