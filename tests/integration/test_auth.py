"""Tokens, roles and scopes on /api/v1 and /v2, revocation, expiry, audit, no raw secrets."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from service.config import Settings
from service.http.app import create_app
from testkit import oci, procs
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


# -- every /api/v1 operation against every role ---------------------------------------------
TEAM, FOREIGN = "team-a/app", "team-b/app"
RBAC_POLICY = {"name": "rbac", "repositories": ["team-a/*", "team-b/*"], "scan_on_push": False,
               "promotion": {"develop": {}, "staging": {}, "production": {"approvals": {
                   "required": 1, "approvers": ["role:reader", "role:ci", "role:admin"]}}}}
ROLE_SPECS = {
    "reader": {"role": "reader"},
    "ci": {"role": "ci"},
    "scoped": {"role": "ci", "repositories": ["team-a/*"], "environments": ["develop"]},
    "admin": {"role": "admin"},
}
# A scoped ci token is a ci token inside its globs: the requests below stay inside them.
RANK = {"reader": 1, "ci": 2, "scoped": 2, "admin": 3}
WEBHOOK = "webhook token"  # the registry's shared secret: no API token of any role opens it


def api_operations() -> list[tuple[str, str]]:
    """(method, rule) of every /api/v1 route the app factory mounts."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:9/0"))
    return sorted((method, rule.rule) for rule in app.url_map.iter_rules()
                  if rule.rule.startswith("/api/v1/")
                  for method in rule.methods - {"HEAD", "OPTIONS"})


@dataclass
class World:
    """What the requests of the role table point at."""

    stack: Stack
    tokens: dict[str, str]
    digest: str
    promotion_id: str
    scan_id: str
    subscription_id: str
    delivery_id: str

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        return call(self.stack, procs.ADMIN_TOKEN, method, path, **kwargs)

    def new_token(self) -> str:
        resp = self.admin("POST", "/api/v1/tokens", json={"name": f"doomed-{uuid.uuid4().hex[:8]}",
                                                           "role": "reader"})
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def new_subscription(self) -> str:
        resp = self.admin("POST", "/api/v1/subscriptions", json={
            "url": "http://127.0.0.1:9/doomed", "events": ["scan.failed"], "secret": "s" * 20})
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def new_policy(self) -> str:
        name = f"doomed-{uuid.uuid4().hex[:8]}"
        resp = self.admin("PUT", f"/api/v1/policies/{name}",
                          json={"name": name, "repositories": [f"{name}/*"]})
        assert resp.status_code == 200, resp.text
        return name


Request = Callable[[World], tuple[str, dict | None]]
SUB = "/api/v1/subscriptions/<string:sub_id>"
# (method, rule) → (who may: the least role, or WEBHOOK; the request: path and JSON body).
# From the contract (API.md, README "Tokens and roles"): a reader reads everything except the
# token list; ci also promotes, rolls back and requests scans inside its globs and
# environments; admin does everything else (policies, tokens, subscriptions, redelivery).
EXPECTED: dict[tuple[str, str], tuple[str, Request]] = {
    ("GET", "/api/v1/audit"): ("reader", lambda w: ("/api/v1/audit", None)),
    ("GET", "/api/v1/environments"): (
        "reader", lambda w: (f"/api/v1/environments?repository={TEAM}", None)),
    ("GET", "/api/v1/events"): ("reader", lambda w: (f"/api/v1/events?repository={TEAM}", None)),
    ("GET", "/api/v1/policies"): ("reader", lambda w: ("/api/v1/policies", None)),
    ("GET", "/api/v1/policies/<string:name>"): ("reader", lambda w: ("/api/v1/policies/rbac",
                                                                     None)),
    ("PUT", "/api/v1/policies/<string:name>"): ("admin", lambda w: (
        "/api/v1/policies/rbac-extra", {"name": "rbac-extra", "repositories": ["zz/*"]})),
    ("DELETE", "/api/v1/policies/<string:name>"): (
        "admin", lambda w: (f"/api/v1/policies/{w.new_policy()}", None)),
    ("POST", "/api/v1/policies/evaluate"): ("reader", lambda w: (
        "/api/v1/policies/evaluate", {"action": "push", "repository": TEAM, "tag": "v9.0.0"})),
    ("POST", "/api/v1/promotions"): ("ci", lambda w: (
        "/api/v1/promotions", {"repository": TEAM, "environment": "develop", "tag": "v1.0.0"})),
    ("GET", "/api/v1/promotions"): (
        "reader", lambda w: (f"/api/v1/promotions?repository={TEAM}", None)),
    ("GET", "/api/v1/promotions/<string:promotion_id>"): (
        "reader", lambda w: (f"/api/v1/promotions/{w.promotion_id}", None)),
    ("POST", "/api/v1/rollbacks"): ("ci", lambda w: (
        "/api/v1/rollbacks", {"repository": TEAM, "environment": "develop"})),
    ("POST", "/api/v1/scans"): ("ci", lambda w: (
        "/api/v1/scans", {"repository": TEAM, "reference": "v1.0.0"})),
    ("GET", "/api/v1/scans"): ("reader", lambda w: (f"/api/v1/scans?repository={TEAM}", None)),
    ("GET", "/api/v1/scans/<string:scan_id>"): (
        "reader", lambda w: (f"/api/v1/scans/{w.scan_id}", None)),
    ("GET", "/api/v1/scans/<string:scan_id>/sbom"): (
        "reader", lambda w: (f"/api/v1/scans/{w.scan_id}/sbom", None)),
    ("POST", "/api/v1/subscriptions"): ("admin", lambda w: ("/api/v1/subscriptions", {
        "url": "http://127.0.0.1:9/x", "events": ["scan.completed"], "secret": "z" * 20})),
    ("GET", "/api/v1/subscriptions"): ("reader", lambda w: ("/api/v1/subscriptions", None)),
    ("DELETE", SUB): ("admin", lambda w: (f"/api/v1/subscriptions/{w.new_subscription()}",
                                          None)),
    ("GET", f"{SUB}/deliveries"): (
        "reader", lambda w: (f"/api/v1/subscriptions/{w.subscription_id}/deliveries", None)),
    ("POST", f"{SUB}/deliveries/<string:delivery_id>/redeliver"): ("admin", lambda w: (
        f"/api/v1/subscriptions/{w.subscription_id}/deliveries/{w.delivery_id}/redeliver",
        None)),
    ("POST", "/api/v1/tokens"): ("admin", lambda w: (
        "/api/v1/tokens", {"name": f"made-{uuid.uuid4().hex[:8]}", "role": "reader"})),
    ("GET", "/api/v1/tokens"): ("admin", lambda w: ("/api/v1/tokens", None)),
    ("DELETE", "/api/v1/tokens/<string:token_id>"): (
        "admin", lambda w: (f"/api/v1/tokens/{w.new_token()}", None)),
    ("GET", "/api/v1/vulndb"): ("reader", lambda w: ("/api/v1/vulndb", None)),
    ("POST", "/api/v1/vulndb/imports"): ("admin", lambda w: ("/api/v1/vulndb/imports", None)),
    ("GET", "/api/v1/tag-bindings"): (
        "reader", lambda w: (f"/api/v1/tag-bindings?repository={TEAM}", None)),
    ("DELETE", "/api/v1/tag-bindings"): ("admin", lambda w: (
        f"/api/v1/tag-bindings?repository={TEAM}&tag=v0.0.1", {"reason": "role table"})),
    # who may approve is the policy's approvers list (here: every role), not the token's role;
    # withdrawing is the approver's or an admin's (tests/integration/test_governance_gates.py)
    ("POST", "/api/v1/approvals"): ("reader", lambda w: ("/api/v1/approvals", {
        "repository": TEAM, "environment": "production", "digest": w.digest})),
    ("GET", "/api/v1/approvals"): (
        "reader", lambda w: (f"/api/v1/approvals?repository={TEAM}", None)),
    ("DELETE", "/api/v1/approvals/<string:approval_id>"): (
        "reader", lambda w: ("/api/v1/approvals/apr_none", None)),
    ("POST", "/api/v1/verifications"): ("ci", lambda w: ("/api/v1/verifications", {
        "repository": TEAM, "digest": w.digest, "environment": "develop", "name": "rbac",
        "result": "passed"})),
    ("GET", "/api/v1/verifications"): (
        "reader", lambda w: (f"/api/v1/verifications?repository={TEAM}", None)),
    ("POST", "/api/v1/retention/runs"): ("admin", lambda w: (
        "/api/v1/retention/runs", {"repository": "team-a/none-*", "dry_run": True})),
    ("GET", "/api/v1/retention/runs/<string:run_id>"): (
        "reader", lambda w: ("/api/v1/retention/runs/ret_unknown", None)),
    # disaster recovery (issue 21): the admin's; a restore over this live store is a 409
    ("GET", "/api/v1/backup"): ("admin", lambda w: ("/api/v1/backup", None)),
    ("POST", "/api/v1/restore"): ("admin", lambda w: ("/api/v1/restore", None)),
    ("GET", "/api/v1/timeline"): (
        "reader", lambda w: (f"/api/v1/timeline?repository={TEAM}", None)),
    ("POST", "/api/v1/webhooks/registry"): (WEBHOOK, lambda w: (
        "/api/v1/webhooks/registry", {"events": []})),
}
OPERATIONS = api_operations()


def test_the_role_table_lists_exactly_the_mounted_operations():
    assert sorted(EXPECTED) == OPERATIONS


@pytest.fixture(scope="module")
def world(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Tokens of every role, an image in and out of the scoped globs, a promotion, a scan,
    a subscription with one delivery."""
    admin = stack.admin()
    assert admin.put(f"{stack.gw_url}/api/v1/policies/rbac", json=RBAC_POLICY,
                     timeout=10).status_code == 200
    tmp = tmp_path_factory.mktemp("rbac")
    image = push(stack, tmp, "rbac-app", f"{TEAM}:v1.0.0", f"{FOREIGN}:v1.0.0")
    push(stack, tmp, "rbac-app-2", f"{TEAM}:v2.0.0", f"{FOREIGN}:v2.0.0")
    sub = admin.post(f"{stack.gw_url}/api/v1/subscriptions", timeout=10, json={
        "url": "http://127.0.0.1:9/hook", "events": ["promotion.succeeded"],
        "secret": "x" * 20, "repositories": [TEAM]}).json()
    for repo in (TEAM, FOREIGN):  # two pointer moves each: a rollback has somewhere to go
        for tag in ("v2.0.0", "v1.0.0"):
            resp = admin.post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
                "repository": repo, "environment": "develop", "tag": tag})
            assert resp.status_code == 201, resp.text
    promotion = resp.json()
    scan = admin.post(f"{stack.gw_url}/api/v1/scans", timeout=10,
                      json={"repository": TEAM, "reference": "v1.0.0"})
    assert scan.status_code == 202, scan.text
    deliveries = admin.get(f"{stack.gw_url}/api/v1/subscriptions/{sub['id']}/deliveries",
                           timeout=10).json()["items"]
    assert len(deliveries) == 2, deliveries  # the two promotions of TEAM
    tokens = {}
    for role, spec in ROLE_SPECS.items():
        made = admin.post(f"{stack.gw_url}/api/v1/tokens", timeout=10,
                          json={"name": f"rbac-{role}", **spec})
        assert made.status_code == 201, made.text
        tokens[role] = made.json()["token"]
    return World(stack, tokens, image.digest, promotion["id"], scan.json()["id"], sub["id"],
                 deliveries[0]["id"])


@pytest.mark.parametrize("operation", OPERATIONS, ids=[" ".join(o) for o in OPERATIONS])
def test_each_role_against_each_route(world: World, operation: tuple[str, str]):
    assert operation in EXPECTED, f"{operation} has no entry in EXPECTED: say who may call it"
    needed, build = EXPECTED[operation]
    method = operation[0]
    path, body = build(world)
    stack = world.stack
    assert call(stack, None, method, path, json=body).status_code == 401
    assert call(stack, "tw_not-a-real-token", method, path, json=body).status_code == 401
    for role in ("reader", "ci", "scoped", "admin"):  # admin last: it may consume the target
        resp = call(stack, world.tokens[role], method, path, json=body)
        if needed == WEBHOOK:
            assert resp.status_code == 401, (role, resp.text)
            assert resp.json()["code"] == "unauthorized"
        elif RANK[role] >= RANK[needed]:
            assert resp.status_code not in (401, 403), (role, resp.status_code, resp.text)
        else:
            assert resp.status_code == 403, (role, resp.status_code, resp.text)
            assert resp.json()["code"] == "forbidden"
            assert repr(needed) in resp.json()["message"], resp.json()["message"]


def _scoped_cases(world: World) -> list[tuple[str, str, dict | None, bool]]:
    """(method, path, body, allowed) for the scoped token (team-a/*, develop only)."""
    sub, dlv = world.subscription_id, world.delivery_id
    return [
        ("POST", "/api/v1/promotions",
         {"repository": TEAM, "environment": "develop", "tag": "v1.0.0"}, True),
        ("POST", "/api/v1/promotions",
         {"repository": TEAM, "environment": "staging", "tag": "v1.0.0"}, False),
        ("POST", "/api/v1/promotions",
         {"repository": FOREIGN, "environment": "develop", "tag": "v1.0.0"}, False),
        ("POST", "/api/v1/rollbacks", {"repository": TEAM, "environment": "develop"}, True),
        ("POST", "/api/v1/rollbacks", {"repository": TEAM, "environment": "staging"}, False),
        ("POST", "/api/v1/rollbacks", {"repository": FOREIGN, "environment": "develop"}, False),
        ("POST", "/api/v1/scans", {"repository": TEAM, "reference": "v1.0.0"}, True),
        ("POST", "/api/v1/scans", {"repository": FOREIGN, "reference": "v1.0.0"}, False),
        ("POST", "/api/v1/approvals",
         {"repository": TEAM, "environment": "production", "digest": world.digest}, True),
        ("POST", "/api/v1/approvals",
         {"repository": FOREIGN, "environment": "production", "digest": world.digest}, False),
        ("POST", "/api/v1/verifications", {"repository": TEAM, "environment": "develop",
                                           "digest": world.digest, "name": "rbac",
                                           "result": "passed"}, True),
        ("POST", "/api/v1/verifications", {"repository": TEAM, "environment": "staging",
                                           "digest": world.digest, "name": "rbac",
                                           "result": "passed"}, False),
        ("POST", "/api/v1/verifications", {"repository": FOREIGN, "environment": "develop",
                                           "digest": world.digest, "name": "rbac",
                                           "result": "passed"}, False),
        ("DELETE", f"/api/v1/tokens/{world.new_token()}", None, False),
        ("DELETE", f"/api/v1/subscriptions/{world.new_subscription()}", None, False),
        ("DELETE", f"/api/v1/policies/{world.new_policy()}", None, False),
        ("POST", f"/api/v1/subscriptions/{sub}/deliveries/{dlv}/redeliver", None, False),
    ]


def test_scoped_token_on_rollbacks_scans_deletes_and_redeliveries(world: World,
                                                                   tmp_path: Path):
    token = world.tokens["scoped"]
    for method, path, body, allowed in _scoped_cases(world):
        resp = call(world.stack, token, method, path, json=body)
        if allowed:
            assert resp.status_code not in (401, 403), (method, path, body, resp.text)
        else:
            assert resp.status_code == 403, (method, path, body, resp.status_code, resp.text)
            assert resp.json()["code"] == "forbidden"
    # /v2 manifest deletes: inside the globs reach the registry, outside are refused
    scratch = push(world.stack, tmp_path, "rbac-scratch", f"{TEAM}:scratch-1",
                   f"{FOREIGN}:scratch-1")
    for repo, expected in ((TEAM, 202), (FOREIGN, 403)):
        resp = requests.delete(f"{world.stack.gw_url}/v2/{repo}/manifests/{scratch.digest}",
                               auth=("ci", token), timeout=10)
        assert resp.status_code == expected, (repo, resp.text)


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
