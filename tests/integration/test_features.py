"""Features the README promises that had no test: idempotency lease and window, soak and
freeze through the API, RE2 refusals, redelivery, rate limit, anonymous pull, public URL and
trusted forwarded headers, outbound allowlist, policy-file seeding, tokens out of the log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from service.core.auth import BOOTSTRAP_ID
from service.domain.durations import format_time
from service.store import key
from service.store.promotions import IDEMPOTENCY_TTL
from testkit import oci, procs
from tests.integration.conftest import Stack, start_stack
from tests.integration.test_promotions import push
from tests.integration.test_webhooks import Receiver, wait_for

GATED = {"name": "features", "repositories": ["features/*"], "scan_on_push": False,
         "promotion": {"develop": {}, "staging": {"from": "develop", "soak": "30m"},
                       "production": {"from": "develop", "freeze": []}}}


def api(stack: Stack, method: str, path: str, token: str = procs.ADMIN_TOKEN,
        **kwargs) -> requests.Response:
    return requests.request(method, f"{stack.gw_url}{path}", timeout=30,
                            headers={"Authorization": f"Bearer {token}",
                                     **kwargs.pop("headers", {})}, **kwargs)


def put_policy(stack: Stack, policy: dict) -> None:
    resp = api(stack, "PUT", f"/api/v1/policies/{policy['name']}", json=policy)
    assert resp.status_code == 200, resp.text


# -- on the shared stack ----------------------------------------------------------------------
def test_soak_and_freeze_refuse_promotions_through_the_api(stack: Stack, tmp_path: Path):
    now = datetime.now(UTC)
    frozen = {**GATED, "promotion": {**GATED["promotion"], "production": {
        "from": "develop", "freeze": [{"start": format_time(now - timedelta(hours=1)),
                                       "end": format_time(now + timedelta(hours=1))}]}}}
    put_policy(stack, frozen)
    push(stack, tmp_path, "features-gates", "features/gates:v1.0.0")
    body = {"repository": "features/gates", "tag": "v1.0.0"}
    assert api(stack, "POST", "/api/v1/promotions",
               json={**body, "environment": "develop"}).status_code == 201
    for environment, rule in (("staging", "promotion.soak"), ("production", "promotion.freeze")):
        resp = api(stack, "POST", "/api/v1/promotions", json={**body, "environment": environment})
        assert resp.status_code == 403, resp.text
        assert resp.json()["code"] == "policy_denied"
        assert [v["rule"] for v in resp.json()["violations"]] == [rule], resp.text
    # the same policy without the window lets production through: the freeze was the reason
    put_policy(stack, GATED)
    assert api(stack, "POST", "/api/v1/promotions",
               json={**body, "environment": "production"}).status_code == 201


@pytest.mark.parametrize("pattern", [r"^(v)\1$", r"^(?!tmp-)", r"(?<=x)y"])
def test_a_policy_regex_re2_cannot_run_is_a_400_naming_it(stack: Stack, pattern: str):
    policy = {"name": "features-re2", "repositories": ["features-re2/*"],
              "push": {"allow": ["semver", f"regex:{pattern}"]}}
    resp = api(stack, "PUT", "/api/v1/policies/features-re2", json=policy)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "invalid_request"
    assert any(repr(pattern) in m for m in resp.json()["errors"]["push.allow.1"]), resp.text
    assert api(stack, "GET", "/api/v1/policies/features-re2").status_code == 404


def test_idempotency_key_lives_24_hours_in_redis(stack: Stack, tmp_path: Path):
    put_policy(stack, GATED)
    push(stack, tmp_path, "features-idem", "features/idem:v1.0.0")
    body = {"repository": "features/idem", "environment": "develop", "tag": "v1.0.0"}
    first = api(stack, "POST", "/api/v1/promotions", json=body,
                headers={"Idempotency-Key": "features-window"})
    assert first.status_code == 201, first.text
    ttl = stack.redis_client().ttl(key("idem", f"{BOOTSTRAP_ID}:features-window"))
    assert IDEMPOTENCY_TTL == 24 * 3600
    assert IDEMPOTENCY_TTL - 60 < ttl <= IDEMPOTENCY_TTL, ttl
    again = api(stack, "POST", "/api/v1/promotions", json=body,
                headers={"Idempotency-Key": "features-window"})
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]


def test_a_delivery_can_be_redelivered(stack: Stack, tmp_path: Path):
    put_policy(stack, GATED)
    receiver = Receiver(200)
    try:
        sub = api(stack, "POST", "/api/v1/subscriptions", json={
            "url": receiver.url, "events": ["promotion.succeeded"], "secret": "r" * 24,
            "repositories": ["features/redeliver"]}).json()
        push(stack, tmp_path, "features-redeliver", "features/redeliver:v1.0.0")
        assert api(stack, "POST", "/api/v1/promotions", json={
            "repository": "features/redeliver", "environment": "develop",
            "tag": "v1.0.0"}).status_code == 201
        path = f"/api/v1/subscriptions/{sub['id']}/deliveries"

        def delivered(attempts: int):
            items = api(stack, "GET", path).json()["items"]
            done = items and items[0]["status"] == "delivered"
            return items[0] if done and len(items[0]["attempts"]) == attempts else None

        delivery = wait_for(lambda: delivered(1))
        resp = api(stack, "POST", f"{path}/{delivery['id']}/redeliver")
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "pending"
        wait_for(lambda: delivered(2))
        ids = [headers["X-Tagwarden-Delivery"] for headers, _ in receiver.requests]
        assert ids == [delivery["id"], delivery["id"]]
        assert receiver.requests[0][1] == receiver.requests[1][1]  # the same signed body
    finally:
        receiver.close()


# -- a gateway with a rate limit, anonymous pulls and a public URL -----------------------------
PUBLIC = "https://registry.example.com"


@pytest.fixture(scope="module")
def open_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("open"), worker=False,
                    TAGWARDEN_RATE_LIMIT="5/minute", TAGWARDEN_ANONYMOUS_PULL="true",
                    TAGWARDEN_PUBLIC_URL=PUBLIC)
    yield s
    s.stop()


def test_rate_limit_answers_429_per_token(open_stack: Stack):
    made = api(open_stack, "POST", "/api/v1/tokens", json={"name": "other", "role": "reader"})
    assert made.status_code == 201, made.text  # the admin token's first call of five
    statuses = [api(open_stack, "GET", "/api/v1/policies").status_code for _ in range(5)]
    assert statuses == [200] * 4 + [429]
    limited = api(open_stack, "GET", "/api/v1/policies")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    # the bucket is the token's: another token still gets through
    assert api(open_stack, "GET", "/api/v1/policies",
               token=made.json()["token"]).status_code == 200


def test_anonymous_pull_but_not_push_and_locations_use_the_public_url(open_stack: Stack,
                                                                      tmp_path: Path):
    # pushed straight to the registry: see the xfail below for pushes through this gateway
    image = oci.simple_image("features-anon")
    layout = oci.write_layout(tmp_path / "anon", {"img": image})
    copied = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{open_stack.reg}/features/anon:v1.0.0",
                             creds="")
    assert copied.returncode == 0, copied.stderr
    url = f"{open_stack.gw_url}/v2/features/anon/manifests/v1.0.0"
    pulled = requests.get(url, headers={"Accept": oci.OCI_MANIFEST}, timeout=10)
    assert pulled.status_code == 200, pulled.text
    assert pulled.headers["Docker-Content-Digest"] == image.digest
    anon_push = requests.post(f"{open_stack.gw_url}/v2/features/anon/blobs/uploads/",
                              timeout=10)
    assert anon_push.status_code == 401
    upload = requests.post(f"{open_stack.gw_url}/v2/features/anon/blobs/uploads/", timeout=10,
                           auth=("ci", procs.ADMIN_TOKEN),
                           headers={"X-Forwarded-Host": "evil.example", "Host": "x.test"})
    assert upload.status_code == 202, upload.text
    assert upload.headers["Location"].startswith(f"{PUBLIC}/v2/features/anon/blobs/uploads/")


def test_a_logged_in_push_and_an_anonymous_pull_both_work(tmp_path: Path):
    """GET /v2/ always challenges a client without credentials: skopeo then sends the ones
    it holds (the push works), and one holding none goes on anonymously (the pull works)."""
    anon = start_stack(tmp_path / "anon", worker=False, TAGWARDEN_ANONYMOUS_PULL="true")
    try:
        check_logged_in_push_and_anonymous_pull(anon, tmp_path)
    finally:
        anon.stop()


def check_logged_in_push_and_anonymous_pull(stack: Stack, tmp_path: Path) -> None:
    assert requests.get(f"{stack.gw_url}/v2/", timeout=10).status_code == 401
    image = push(stack, tmp_path, "features-anon-push", "features/anon-push:v1.0.0")
    out = tmp_path / "pulled"
    pulled = oci.skopeo_copy(f"docker://{stack.gw}/features/anon-push:v1.0.0",
                             f"oci:{out}:img", creds="")
    assert pulled.returncode == 0, pulled.stderr
    assert oci.skopeo_digest(f"oci:{out}:img", creds="") == image.digest


# -- a gateway trusting forwarded headers, seeded policies, no outbound allowlist --------------
SEEDED = """\
policies:
  - name: seeded
    repositories: ["seeded/*"]
    push: {allow: [semver], immutable: [semver]}
"""


@pytest.fixture(scope="module")
def proxied_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("proxied")
    seed = workdir / "policies.yaml"
    seed.write_text(SEEDED)
    s = start_stack(workdir, worker=False, without=("TAGWARDEN_OUTBOUND_ALLOWLIST",),
                    TAGWARDEN_TRUST_FORWARDED="true", TAGWARDEN_POLICY_FILE=str(seed))
    yield s
    s.stop()


def test_policy_file_is_seeded_at_gateway_start(proxied_stack: Stack):
    resp = api(proxied_stack, "GET", "/api/v1/policies/seeded")
    assert resp.status_code == 200, resp.text
    assert resp.json()["repositories"] == ["seeded/*"]
    assert resp.json()["push"]["allow"] == ["semver"]
    names = [p["name"] for p in api(proxied_stack, "GET", "/api/v1/policies").json()["items"]]
    assert names == ["seeded"]


def test_forwarded_proto_and_host_make_the_location_when_trusted(proxied_stack: Stack):
    upload = requests.post(f"{proxied_stack.gw_url}/v2/seeded/app/blobs/uploads/", timeout=10,
                           auth=("ci", procs.ADMIN_TOKEN),
                           headers={"X-Forwarded-Proto": "https",
                                    "X-Forwarded-Host": "registry.corp.test"})
    assert upload.status_code == 202, upload.text
    assert upload.headers["Location"].startswith(
        "https://registry.corp.test/v2/seeded/app/blobs/uploads/")


def test_loopback_subscriptions_are_refused_without_an_allowlist(proxied_stack: Stack):
    receiver = Receiver(200)
    try:
        resp = api(proxied_stack, "POST", "/api/v1/subscriptions", json={
            "url": receiver.url, "events": ["promotion.succeeded"], "secret": "l" * 24})
        assert resp.status_code == 400, resp.text
        assert "TAGWARDEN_OUTBOUND_ALLOWLIST" in resp.json()["message"]
        assert resp.json()["errors"] == {
            "url": ["internal addresses are refused unless allow-listed"]}
        assert api(proxied_stack, "GET", "/api/v1/subscriptions").json()["items"] == []
    finally:
        receiver.close()


def test_the_access_log_never_holds_a_token(proxied_stack: Stack):
    made = api(proxied_stack, "POST", "/api/v1/tokens", json={"name": "logged", "role": "ci"})
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    for _ in range(2):  # bearer on the API, Basic on /v2, and in a query string
        assert api(proxied_stack, "GET", "/api/v1/policies", token=secret).status_code == 200
        requests.get(f"{proxied_stack.gw_url}/v2/", auth=("ci", secret), timeout=10)
        requests.get(f"{proxied_stack.gw_url}/healthz", params={"token": secret}, timeout=10)
    # access lines are written in order, in batches: once a last request's line is there,
    # every line before it is
    marker = f"last-{uuid.uuid4().hex}"
    requests.get(f"{proxied_stack.gw_url}/healthz", headers={"X-Request-ID": marker}, timeout=10)

    def written() -> str | None:
        text = proxied_stack.gateway.log.read_text(errors="replace")
        return text if marker in text else None

    log = wait_for(written, timeout=10, interval=0.05)
    assert "route=/api/v1/policies" in log and "actor=logged" in log, log[-2000:]
    for leaked in (secret, procs.ADMIN_TOKEN, secret[len("tw_"):]):
        assert leaked not in log
