"""Promotions against the real registry: gates, history, rollback, time travel, idempotency."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from testkit import oci
from tests.integration.conftest import V2, Stack

POLICY = {
    "name": "promo",
    "repositories": ["promo/*"],
    "promotion": {
        "develop": {},
        "staging": {"from": "develop", "tags": ["semver", "git-sha"]},
        "production": {"from": "staging", "tags": ["semver"]},
    },
}


@pytest.fixture(scope="module")
def policy(stack: Stack):
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/promo", json=POLICY, timeout=10)
    assert resp.status_code == 200, resp.text
    return POLICY


def push(stack: Stack, tmp_path: Path, name: str, *tags: str) -> oci.Image:
    image = oci.simple_image(name)
    layout = oci.write_layout(tmp_path / name, {"img": image})
    for tag in tags:
        result = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{tag}")
        assert result.returncode == 0, result.stderr
    return image


def promote(stack: Stack, expect: int = 201, headers: dict | None = None, **body):
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body,
                              headers=headers or {}, timeout=30)
    assert resp.status_code == expect, resp.text
    return resp.json()


def registry_digest(stack: Stack, repo: str, tag: str) -> str | None:
    resp = V2.head(f"{stack.reg_url}/v2/{repo}/manifests/{tag}",
                         headers={"Accept": ", ".join([oci.OCI_MANIFEST, oci.OCI_INDEX])},
                         timeout=10)
    return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None


def test_develop_staging_production_then_rollback(stack: Stack, policy, tmp_path: Path):
    repo = "promo/flow"
    one = push(stack, tmp_path, "flow-1", f"{repo}:v1.0.0")
    two = push(stack, tmp_path, "flow-2", f"{repo}:v1.1.0")
    for env, src in (("develop", {"tag": "v1.0.0"}), ("staging", {"from_environment": "develop"}),
                     ("production", {"from_environment": "staging"})):
        record = promote(stack, repository=repo, environment=env, reason="ship it", **src)
        assert record["digest"] == one.digest
        assert record["kind"] == "promotion"
        assert record["tags"] == ["v1.0.0"]
        assert record["policy"] == "promo"
        assert registry_digest(stack, repo, env) == one.digest
    first_prod = record
    for env in ("develop", "staging", "production"):
        src = {"tag": "v1.1.0"} if env == "develop" else {"digest": two.digest}
        record = promote(stack, repository=repo, environment=env, **src)
        assert record["previous_digest"] == one.digest
    assert registry_digest(stack, repo, "production") == two.digest

    back = stack.admin().post(f"{stack.gw_url}/api/v1/rollbacks",
                              json={"repository": repo, "environment": "production",
                                    "reason": "burning"}, timeout=30)
    assert back.status_code == 201, back.text
    assert back.json()["kind"] == "rollback"
    assert back.json()["digest"] == one.digest
    assert back.json()["source"]["promotion"] == first_prod["id"]
    assert registry_digest(stack, repo, "production") == one.digest

    hist = stack.admin().get(f"{stack.gw_url}/api/v1/promotions",
                             params={"repository": repo, "environment": "production"},
                             timeout=10).json()
    assert [r["kind"] for r in hist["items"]] == ["rollback", "promotion", "promotion"]
    assert [r["digest"] for r in hist["items"]] == [one.digest, two.digest, one.digest]
    assert hist["next_cursor"] is None
    paged = stack.admin().get(f"{stack.gw_url}/api/v1/promotions",
                              params={"repository": repo, "limit": 2}, timeout=10).json()
    assert len(paged["items"]) == 2 and paged["next_cursor"]
    rest = stack.admin().get(f"{stack.gw_url}/api/v1/promotions",
                             params={"repository": repo, "limit": 50,
                                     "cursor": paged["next_cursor"]}, timeout=10).json()
    assert len(rest["items"]) == 5
    one_record = stack.admin().get(f"{stack.gw_url}/api/v1/promotions/{first_prod['id']}",
                                   timeout=10)
    assert one_record.json() == first_prod
    envs = stack.admin().get(f"{stack.gw_url}/api/v1/environments",
                             params={"repository": repo}, timeout=10).json()
    assert {e["name"]: e["digest"] for e in envs["environments"]} == {
        "develop": two.digest, "staging": two.digest, "production": one.digest}


def test_gates_refuse_latest_and_skipping_stages(stack: Stack, policy, tmp_path: Path):
    repo = "promo/gates"
    image = push(stack, tmp_path, "gates-1", f"{repo}:latest", f"{repo}:v2.0.0")
    skipped = promote(stack, expect=403, repository=repo, environment="production",
                      tag="v2.0.0")
    assert skipped["code"] == "policy_denied"
    assert "promotion.from" in [v["rule"] for v in skipped["violations"]]
    promote(stack, repository=repo, environment="develop", tag="latest")
    promote(stack, repository=repo, environment="staging", tag="latest")
    refused = promote(stack, expect=403, repository=repo, environment="production",
                      tag="latest")
    assert [v["rule"] for v in refused["violations"]] == ["promotion.latest"]
    assert registry_digest(stack, repo, "production") is None
    dry = promote(stack, expect=200, repository=repo, environment="production", tag="v2.0.0",
                  dry_run=True)
    assert dry["dry_run"] is True and dry["allowed"] is True
    assert registry_digest(stack, repo, "production") is None
    evaluated = stack.admin().post(f"{stack.gw_url}/api/v1/policies/evaluate", json={
        "action": "promote", "repository": repo, "environment": "production", "tag": "latest"},
        timeout=10).json()
    assert [v["rule"] for v in evaluated["violations"]] == ["promotion.latest"]
    done = promote(stack, repository=repo, environment="production", tag="v2.0.0")
    assert done["digest"] == image.digest
    # a digest in use by an environment cannot be deleted through the gateway
    deleted = V2.delete(f"{stack.gw_url}/v2/{repo}/manifests/{image.digest}", timeout=10)
    assert deleted.status_code == 403
    assert deleted.json()["errors"][0]["code"] == "DENIED"
    assert deleted.json()["errors"][0]["detail"]["violations"][0]["rule"] == "delete.in_use"


def test_bad_promotion_requests(stack: Stack, policy, tmp_path: Path):
    repo = "promo/bad"
    image = push(stack, tmp_path, "bad-1", f"{repo}:v1.0.0")
    cases = [
        (404, {"repository": "promo/none", "environment": "develop", "tag": "v1.0.0"}),
        (404, {"repository": repo, "environment": "develop", "tag": "v9.9.9"}),
        (404, {"repository": repo, "environment": "develop", "digest": "sha256:" + "e" * 64}),
        (422, {"repository": repo, "environment": "qa", "tag": "v1.0.0"}),
        (422, {"repository": repo, "environment": "staging", "from_environment": "staging"}),
        (422, {"repository": repo, "environment": "develop"}),
        (422, {"repository": repo, "environment": "develop", "tag": "v1.0.0",
               "digest": image.digest}),
        (404, {"repository": repo, "environment": "staging", "from_environment": "develop"}),
        (422, {"repository": repo, "environment": "develop", "tag": "v1.0.0", "extra": 1}),
        (422, {"repository": repo, "environment": "develop", "digest": "md5:abc"}),
    ]
    for status, body in cases:
        resp = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body, timeout=10)
        assert resp.status_code == status, (body, resp.text)
        assert resp.json()["code"] in ("not_found", "invalid_request"), resp.text
    first = promote(stack, repository=repo, environment="develop", tag="v1.0.0")
    conflict = promote(stack, expect=409, repository=repo, environment="develop",
                       tag="v1.0.0", expected_digest="sha256:" + "f" * 64)
    assert conflict["code"] == "conflict"
    again = promote(stack, repository=repo, environment="develop", tag="v1.0.0",
                    expected_digest=image.digest)
    assert again["previous_digest"] == first["digest"] == image.digest


def test_idempotency_key_replays_and_refuses_other_bodies(stack: Stack, policy, tmp_path):
    repo = "promo/idem"
    push(stack, tmp_path, "idem-1", f"{repo}:v1.0.0")
    key = {"Idempotency-Key": f"ci-run-{time.time_ns()}"}
    body = {"repository": repo, "environment": "develop", "tag": "v1.0.0"}
    first = promote(stack, headers=key, **body)
    replay = promote(stack, headers=key, **body)
    assert replay["id"] == first["id"]
    other = promote(stack, expect=422, headers=key, **{**body, "reason": "different"})
    assert other["code"] == "idempotency_mismatch"
    hist = stack.admin().get(f"{stack.gw_url}/api/v1/promotions",
                             params={"repository": repo}, timeout=10).json()
    assert [r["id"] for r in hist["items"]] == [first["id"]]


def test_time_travel_answers_what_ran_when(stack: Stack, policy, tmp_path: Path):
    repo = "promo/travel"
    one = push(stack, tmp_path, "travel-1", f"{repo}:v1.0.0")
    two = push(stack, tmp_path, "travel-2", f"{repo}:v2.0.0")
    before = promote(stack, repository=repo, environment="develop", tag="v1.0.0")
    time.sleep(0.05)
    after = promote(stack, repository=repo, environment="develop", tag="v2.0.0")

    def at(moment: str) -> dict:
        resp = stack.admin().get(f"{stack.gw_url}/api/v1/environments",
                                 params={"repository": repo, "at": moment}, timeout=10)
        assert resp.status_code == 200, resp.text
        return {e["name"]: e["digest"] for e in resp.json()["environments"]}

    assert at("2000-01-01T00:00:00Z")["develop"] is None
    assert at(before["created_at"])["develop"] == one.digest
    assert at(after["created_at"])["develop"] == two.digest
    bad = stack.admin().get(f"{stack.gw_url}/api/v1/environments",
                            params={"repository": repo, "at": "yesterday"}, timeout=10)
    assert bad.status_code == 422
    assert "at" in bad.json()["errors"]


def wait_for_push_event(stack: Stack, repo: str, tag: str, digest: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        resp = stack.admin().get(f"{stack.gw_url}/api/v1/events",
                                 params={"repository": repo, "action": "push"}, timeout=10)
        if any(e.get("tag") == tag and e.get("digest") == digest for e in resp.json()["items"]):
            return
        time.sleep(0.1)
    raise AssertionError(f"no push event for {repo}:{tag}")


def wait_for_scans(stack: Stack, digest: str) -> list[dict]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        items = stack.admin().get(f"{stack.gw_url}/api/v1/scans", params={"digest": digest},
                                  timeout=10).json()["items"]
        if items:
            return items
        time.sleep(0.1)
    raise AssertionError(f"no scan of {digest} was queued")


def test_promotion_commit_releases_the_lock_and_queues_no_scan(stack: Stack, policy,
                                                               tmp_path: Path):
    repo = "promo/lean"
    image = push(stack, tmp_path, "lean-1", f"{repo}:v3.0.0")
    scans_before = wait_for_scans(stack, image.digest)  # scan-on-push of the tag
    record = promote(stack, repository=repo, environment="develop", tag="v3.0.0")
    assert (record["digest"], record["tags"]) == (image.digest, ["v3.0.0"])
    r = stack.redis_client()
    assert r.exists(f"tw:lock:env:{repo}:develop") == 0
    assert r.hget(f"tw:tags:{repo}", "develop") == image.digest
    assert r.sismember("tw:intents", f"{repo}|develop") == 0
    wait_for_push_event(stack, repo, "develop", image.digest)
    time.sleep(0.5)  # the worker handles the event right after recording it
    scans_after = stack.admin().get(f"{stack.gw_url}/api/v1/scans",
                                    params={"digest": image.digest}, timeout=10).json()["items"]
    assert [s["id"] for s in scans_after] == [s["id"] for s in scans_before]


def test_rollback_idempotency_and_expected_digest_hostile(stack: Stack, policy, tmp_path):
    from tests.integration.test_attacks import token

    repo = "promo/rbidem"
    one = push(stack, tmp_path, "rbidem-1", f"{repo}:v1.0.0")
    two = push(stack, tmp_path, "rbidem-2", f"{repo}:v2.0.0")
    promote(stack, repository=repo, environment="develop", tag="v1.0.0")
    promote(stack, repository=repo, environment="develop", tag="v2.0.0")
    url = f"{stack.gw_url}/api/v1/rollbacks"
    body = {"repository": repo, "environment": "develop", "expected_digest": two.digest}
    key = {"Idempotency-Key": f"rb-{time.time_ns()}"}
    first = stack.admin().post(url, json=body, headers=key, timeout=30)
    assert first.status_code == 201 and first.json()["digest"] == one.digest
    assert "Idempotent-Replayed" not in first.headers
    replay = stack.admin().post(url, json=body, headers=key, timeout=30)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == first.json()["id"]
    # without the key, the expectation alone refuses a second rollback
    again = stack.admin().post(url, json=body, timeout=30)
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    # the same key with another body, a forged digest, another team's token, a huge body
    other = stack.admin().post(url, json={**body, "reason": "x"}, headers=key, timeout=30)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_mismatch"
    forged = stack.admin().post(url, json={**body, "expected_digest": "sha256:zz"}, timeout=30)
    assert forged.status_code == 422 and "expected_digest" in forged.json()["errors"]
    outsider = requests.post(url, json=body, headers={
        **key, "Authorization": f"Bearer {token(stack, 'rb-other', 'ci', repositories=['x/*'])}"},
        timeout=30)
    assert outsider.status_code == 403 and outsider.json()["code"] == "forbidden"
    huge = stack.admin().post(url, json={**body, "reason": "r" * (3 * 1024 * 1024)}, timeout=30)
    assert huge.status_code == 413
    # a key is the caller's: the same key from another token runs (and is refused) on its own
    mine = token(stack, "rb-mine", "ci", repositories=["promo/*"])
    theirs = requests.post(url, json=body, headers={**key, "Authorization": f"Bearer {mine}"},
                           timeout=30)
    assert theirs.status_code == 409 and "Idempotent-Replayed" not in theirs.headers
    hist = stack.admin().get(f"{stack.gw_url}/api/v1/promotions",
                             params={"repository": repo, "environment": "develop"},
                             timeout=10).json()["items"]
    assert [r["kind"] for r in hist] == ["rollback", "promotion", "promotion"]
    assert hist[0]["idempotency_key"] == key["Idempotency-Key"]


def test_denied_dry_run_is_audited_as_denied(stack: Stack, policy, tmp_path):
    repo = "promo/dryaudit"
    push(stack, tmp_path, "dryaudit-1", f"{repo}:v1.0.0")
    preview = promote(stack, expect=200, repository=repo, environment="production",
                      tag="v1.0.0", dry_run=True)
    assert preview["allowed"] is False
    allowed = promote(stack, expect=200, repository=repo, environment="develop", tag="v1.0.0",
                      dry_run=True)
    assert allowed["allowed"] is True
    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit", timeout=10,
                              params={"repository": repo}).json()["items"]
    assert [(a["action"], a["outcome"], a["status"]) for a in audit] == [
        ("promotion.create", "success", 200), ("promotion.create", "denied", 200)]
