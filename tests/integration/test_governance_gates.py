"""The approvals and verified gates through the real stack: tokens of several names and roles
approve, withdraw and let approvals expire; CI records check results (newest wins); the
promotion is allowed or denied with exact rule ids and messages; hostile callers get 403/422;
events go to subscribers; the CLI does the same through the API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from testkit import procs
from tests.integration.conftest import Stack
from tests.integration.test_cli import tw
from tests.integration.test_promotions import push
from tests.integration.test_webhooks import Receiver, wait_for

APPROVERS = ["role:admin", "token:gg-alice", "glob:gg-release-*"]
PRODUCTION = {"from": "staging",
              "approvals": {"required": 2, "approvers": APPROVERS,
                            "requester_may_approve": False, "valid_for": "24h"},
              "verified": {"in": "staging", "checks": ["acceptance"]}}
POLICY = {"name": "gates", "repositories": ["gates/*"], "scan_on_push": False,
          "promotion": {"develop": {}, "staging": {"from": "develop"},
                        "production": PRODUCTION}}
SECRET = {"name": "gates-secret", "repositories": ["secret/*"], "scan_on_push": False,
          "promotion": {"develop": {}, "staging": {},
                        "production": {"approvals": {"required": 1,
                                                     "approvers": ["glob:*"]}}}}
# name → (role, repositories, environments)
TOKENS = {
    "gg-alice": ("reader", None, None),
    "gg-release-1": ("reader", None, None),
    "gg-release-bot": ("ci", ["gates/*"], None),  # promotes, and may approve (the glob)
    "gg-carol": ("reader", None, None),  # not an approver
    "gg-ci": ("ci", ["gates/*"], None),  # records verifications, may not approve
    "gg-ci-develop": ("ci", ["gates/*"], ["develop"]),
    "gg-root": ("admin", None, None),
    "gg-release-team-a": ("reader", ["team-a/*"], None),  # an approver by name, other team
    "gg-ci-team-a": ("ci", ["team-a/*"], None),
}


@dataclass
class Gates:
    stack: Stack
    tokens: dict[str, str]
    tmp: Path

    def call(self, who: str, method: str, path: str, **kwargs) -> requests.Response:
        token = procs.ADMIN_TOKEN if who == "admin" else self.tokens[who]
        return requests.request(method, f"{self.stack.gw_url}{path}", timeout=30,
                                headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def ok(self, who: str, method: str, path: str, status: int = 200, **kwargs) -> dict:
        resp = self.call(who, method, path, **kwargs)
        assert resp.status_code == status, resp.text
        return resp.json()

    def refused(self, who: str, method: str, path: str, status: int, code: str,
                **kwargs) -> dict:
        resp = self.call(who, method, path, **kwargs)
        assert resp.status_code == status, resp.text
        assert resp.json()["code"] == code, resp.text
        return resp.json()

    def staged(self, repo: str, name: str) -> str:
        """Push `repo:v1.0.0`, promote it develop → staging; its digest."""
        image = push(self.stack, self.tmp, name, f"{repo}:v1.0.0")
        for env, src in (("develop", {"tag": "v1.0.0"}),
                         ("staging", {"from_environment": "develop"})):
            self.ok("admin", "POST", "/api/v1/promotions", 201,
                    json={"repository": repo, "environment": env, **src})
        return image.digest

    def approve(self, who: str, repo: str, digest: str, status: int = 201,
                environment: str = "production", **extra) -> dict:
        return self.ok(who, "POST", "/api/v1/approvals", status, json={
            "repository": repo, "environment": environment, "digest": digest, **extra})

    def verify(self, repo: str, digest: str, result: str, name: str = "acceptance",
               environment: str = "staging", who: str = "gg-ci") -> dict:
        return self.ok(who, "POST", "/api/v1/verifications", 201, json={
            "repository": repo, "digest": digest, "environment": environment, "name": name,
            "result": result, "url": "https://ci.example.com/jobs/1"})

    def dry_run(self, who: str, repo: str) -> dict:
        return self.ok(who, "POST", "/api/v1/promotions", 200, json={
            "repository": repo, "environment": "production", "from_environment": "staging",
            "dry_run": True})

    def promote(self, who: str, repo: str, status: int = 201) -> dict:
        return self.ok(who, "POST", "/api/v1/promotions", status, json={
            "repository": repo, "environment": "production", "from_environment": "staging"})


@pytest.fixture(scope="module")
def gates(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Gates:
    admin = stack.admin()
    for policy in (POLICY, SECRET):
        resp = admin.put(f"{stack.gw_url}/api/v1/policies/{policy['name']}", json=policy,
                         timeout=10)
        assert resp.status_code == 200, resp.text
    tokens = {}
    for name, (role, repositories, environments) in TOKENS.items():
        spec = {"name": name, "role": role}
        if repositories:
            spec["repositories"] = repositories
        if environments:
            spec["environments"] = environments
        resp = admin.post(f"{stack.gw_url}/api/v1/tokens", json=spec, timeout=10)
        assert resp.status_code == 201, resp.text
        tokens[name] = resp.json()["token"]
    return Gates(stack, tokens, tmp_path_factory.mktemp("gates"))


def approvals_message(digest: str, valid: str, missing: int, requester: str,
                      repo: str = "gates/app") -> str:
    return (f"'production' needs 2 approval(s) of {digest} from distinct approvers; {valid}, "
            f"{missing} missing. May approve: role:admin, token:gg-alice, glob:gg-release-*; "
            f"not the requester '{requester}'. Approve with `tagwarden approve --repository "
            f"{repo} --env production --digest {digest}` (POST /api/v1/approvals); approvals "
            "expire after 1d")


def verified_message(digest: str, found: str, repo: str = "gates/app") -> str:
    return (f"'production' needs passing checks recorded in 'staging' for {digest}: {found}. "
            "Run the checks against 'staging', then record each with `tagwarden verify "
            f"--repository {repo} --env staging --digest {digest} --name <check> --result "
            "passed` (POST /api/v1/verifications)")


def rules(body: dict) -> list[str]:
    return [v["rule"] for v in body["violations"]]


def test_production_needs_two_distinct_approvers_and_passing_acceptance(gates: Gates):
    repo = "gates/app"
    digest = gates.staged(repo, "gates-app")
    # nothing yet: the dry run and /policies/evaluate name both gates, and who may approve
    preview = gates.dry_run("gg-release-bot", repo)
    assert preview["allowed"] is False and preview["approvals"] == []
    assert rules(preview) == ["promotion.approvals", "promotion.verified"]
    assert preview["violations"][0]["message"] == approvals_message(
        digest, "0 valid", 2, "gg-release-bot")
    assert preview["violations"][1]["message"] == verified_message(
        digest, "acceptance: never recorded")
    evaluated = gates.ok("gg-release-bot", "POST", "/api/v1/policies/evaluate", json={
        "action": "promote", "repository": repo, "environment": "production",
        "digest": digest})
    assert evaluated["violations"] == preview["violations"]

    # verification: newest wins, whatever came before
    gates.verify(repo, digest, "passed")
    failed = gates.verify(repo, digest, "failed")
    assert failed["result"] == "failed" and failed["recorded_by"] == "gg-ci"
    preview = gates.dry_run("gg-release-bot", repo)
    assert rules(preview) == ["promotion.approvals", "promotion.verified"]
    assert preview["violations"][1]["message"] == verified_message(
        digest, f"acceptance: newest result failed ({failed['created_at']}, "
                "https://ci.example.com/jobs/1)")
    gates.verify(repo, digest, "passed", environment="develop")  # another environment
    assert rules(gates.dry_run("gg-release-bot", repo)) == [
        "promotion.approvals", "promotion.verified"]
    gates.verify(repo, digest, "passed")
    listed = gates.ok("gg-carol", "GET", "/api/v1/verifications",
                      params={"repository": repo, "digest": digest, "environment": "staging"})
    assert [v["result"] for v in listed["items"]] == ["passed", "failed", "passed"]

    # approvals: a replay counts once, the requester's own does not count
    first = gates.approve("gg-alice", repo, digest, comment="looks good")
    assert {k: first[k] for k in ("repository", "environment", "digest", "approver",
                                  "comment", "status")} == {
        "repository": repo, "environment": "production", "digest": digest,
        "approver": "gg-alice", "comment": "looks good", "status": "valid"}
    assert first["id"].startswith("apr_") and first["expires_at"] > first["created_at"]
    again = gates.approve("gg-alice", repo, digest)
    own = gates.approve("gg-release-bot", repo, digest)
    denied = gates.promote("gg-release-bot", repo, 403)
    assert denied["code"] == "policy_denied" and rules(denied) == ["promotion.approvals"]
    assert denied["violations"][0]["message"] == approvals_message(
        digest, "1 valid (gg-alice) (the requester's own approval does not count)", 1,
        "gg-release-bot")
    # for another requester the bot's approval counts: the admin's dry run is allowed
    assert gates.dry_run("admin", repo)["allowed"] is True

    second = gates.approve("gg-release-1", repo, digest)
    record = gates.promote("gg-release-bot", repo)
    assert record["digest"] == digest and record["actor"] == "gg-release-bot"
    assert sorted(record["approvals"]) == sorted([again["id"], second["id"]])
    assert own["id"] not in record["approvals"] and first["id"] not in record["approvals"]
    stored = gates.ok("gg-carol", "GET", f"/api/v1/promotions/{record['id']}")
    assert stored["approvals"] == record["approvals"]
    listed = gates.ok("gg-carol", "GET", "/api/v1/approvals",
                      params={"repository": repo, "environment": "production",
                              "digest": digest})
    assert [a["id"] for a in listed["items"]] == [second["id"], own["id"], again["id"],
                                                  first["id"]]
    page = gates.ok("gg-carol", "GET", "/api/v1/approvals",
                    params={"repository": repo, "limit": 3})
    assert len(page["items"]) == 3 and page["next_cursor"]


def test_withdrawn_approvals_stop_counting_and_subscribers_hear_of_it(gates: Gates):
    repo = "gates/withdraw"
    digest = gates.staged(repo, "gates-withdraw")
    gates.verify(repo, digest, "passed")
    receiver = Receiver(200)
    try:
        sub = gates.ok("admin", "POST", "/api/v1/subscriptions", 201, json={
            "url": receiver.url, "events": ["approval.granted", "approval.withdrawn"],
            "secret": "g" * 24, "repositories": [repo]})
        alice = gates.approve("gg-alice", repo, digest)
        root = gates.approve("gg-root", repo, digest)  # role:admin
        assert gates.dry_run("gg-release-bot", repo)["allowed"] is True
        # someone else's approval: 403 for a non-admin, whatever its role
        for who in ("gg-carol", "gg-release-1", "gg-ci"):
            refused = gates.refused(who, "DELETE", f"/api/v1/approvals/{alice['id']}", 403,
                                    "forbidden")
            assert refused["message"] == (f"approval {alice['id']} was given by 'gg-alice': "
                                          "only that approver or an admin may withdraw it")
        gone = gates.ok("gg-alice", "DELETE", f"/api/v1/approvals/{alice['id']}")
        assert gone["status"] == "withdrawn" and gone["withdrawn_by"] == "gg-alice"
        assert gates.ok("gg-alice", "DELETE", f"/api/v1/approvals/{alice['id']}") == gone
        preview = gates.dry_run("gg-release-bot", repo)
        assert rules(preview) == ["promotion.approvals"]
        assert preview["violations"][0]["message"] == approvals_message(
            digest, "1 valid (gg-root)", 1, "gg-release-bot", repo)
        by_admin = gates.ok("admin", "DELETE", f"/api/v1/approvals/{root['id']}")
        assert by_admin["withdrawn_by"] == "admin (bootstrap)"
        assert gates.promote("gg-release-bot", repo, 403)["violations"][0]["message"] == (
            approvals_message(digest, "0 valid", 2, "gg-release-bot", repo))
        gates.refused("gg-alice", "DELETE", "/api/v1/approvals/apr_nope", 404, "not_found")

        def events():
            items = gates.ok("admin", "GET", f"/api/v1/subscriptions/{sub['id']}/deliveries")[
                "items"]
            return items if len(items) == 4 and all(
                d["status"] == "delivered" for d in items) else None

        wait_for(events)
        received = sorted((h["X-Tagwarden-Event"], json.loads(b)["data"]["id"],
                           json.loads(b)["actor"]) for h, b in receiver.requests)
        assert received == sorted([
            ("approval.granted", alice["id"], "gg-alice"),
            ("approval.granted", root["id"], "gg-root"),
            ("approval.withdrawn", alice["id"], "gg-alice"),
            ("approval.withdrawn", root["id"], "admin (bootstrap)")])
    finally:
        receiver.close()
    for who, outcomes in (("gg-alice", [("success", 200), ("success", 200)]),
                          ("gg-carol", [("denied", 403)]),
                          ("admin (bootstrap)", [("success", 200)])):
        audit = gates.ok("admin", "GET", "/api/v1/audit",
                         params={"actor": who, "action": "approval.withdraw"})["items"]
        mine = [(a["outcome"], a["status"]) for a in audit
                if a["target"]["approval_id"] in (alice["id"], root["id"])]
        assert mine == outcomes, audit


def test_expired_approvals_stop_counting(gates: Gates):
    repo = "gates/expiry"
    digest = gates.staged(repo, "gates-expiry")
    gates.verify(repo, digest, "passed")
    gates.approve("gg-alice", repo, digest)
    gates.approve("gg-release-1", repo, digest)
    assert gates.dry_run("gg-release-bot", repo)["allowed"] is True
    # a policy that keeps approvals for one second makes these two expire
    short = {**POLICY, "name": "gates-expiry", "repositories": ["gates/expiry"], "promotion": {
        **POLICY["promotion"], "production": {**PRODUCTION, "approvals": {
            **PRODUCTION["approvals"], "valid_for": "1s"}}}}
    gates.ok("admin", "PUT", "/api/v1/policies/gates-expiry", json=short)
    preview = wait_for(lambda: (lambda p: p if not p["allowed"] else None)(
        gates.dry_run("gg-release-bot", repo)))
    assert rules(preview) == ["promotion.approvals"]
    assert "; 0 valid, 2 missing. May approve:" in preview["violations"][0]["message"]
    assert "approvals expire after 1s" in preview["violations"][0]["message"]
    statuses = {a["approver"]: a["status"] for a in gates.ok(
        "gg-carol", "GET", "/api/v1/approvals", params={"repository": repo})["items"]}
    assert statuses == {"gg-alice": "valid", "gg-release-1": "valid"}  # stored expiry: 24h
    fresh = gates.approve("gg-alice", repo, digest)
    assert fresh["status"] == "valid"
    gates.promote("gg-release-bot", repo, 403)
    wait_for(lambda: {a["id"]: a["status"] for a in gates.ok(
        "gg-carol", "GET", "/api/v1/approvals", params={"repository": repo})["items"]}[
        fresh["id"]] == "expired")


def test_who_may_approve_and_record(gates: Gates):
    repo = "gates/who"
    digest = gates.staged(repo, "gates-who")
    body = {"repository": repo, "environment": "production", "digest": digest}
    # not in the approvers list, whatever the role
    for who in ("gg-carol", "gg-ci"):
        refused = gates.refused(who, "POST", "/api/v1/approvals", 403, "forbidden", json=body)
        role = TOKENS[who][0]
        assert refused["message"] == (
            f"token '{who}' (role '{role}') may not approve promotions of {repo} into "
            "'production'; policy 'gates' allows: role:admin, token:gg-alice, glob:gg-release-*")
    # an environment without an approvals gate takes none
    refused = gates.refused("gg-alice", "POST", "/api/v1/approvals", 422, "invalid_request",
                            json={**body, "environment": "staging"})
    assert refused["errors"] == {"environment": ["no approvals gate in policy 'gates'"]}
    # a digest the repository does not hold
    gates.refused("gg-alice", "POST", "/api/v1/approvals", 404, "not_found",
                  json={**body, "digest": "sha256:" + "e" * 64})
    # verifications: ci within its repositories and environments; readers never
    verification = {"repository": repo, "digest": digest, "environment": "staging",
                    "name": "acceptance", "result": "passed"}
    gates.refused("gg-alice", "POST", "/api/v1/verifications", 403, "forbidden",
                  json=verification)
    gates.refused("gg-ci-develop", "POST", "/api/v1/verifications", 403, "forbidden",
                  json=verification)
    assert gates.ok("gg-ci-develop", "POST", "/api/v1/verifications", 201,
                    json={**verification, "environment": "develop"})["environment"] == "develop"
    gates.refused("gg-ci", "POST", "/api/v1/verifications", 422, "invalid_request",
                  json={**verification, "environment": "qa"})
    audit = gates.ok("admin", "GET", "/api/v1/audit", params={
        "repository": repo, "action": "approval.grant"})["items"]
    assert sorted((a["actor"]["name"], a["outcome"], a["status"]) for a in audit) == [
        ("gg-alice", "error", 404), ("gg-alice", "error", 422),
        ("gg-carol", "denied", 403), ("gg-ci", "denied", 403)]
    recorded = gates.ok("admin", "GET", "/api/v1/audit", params={
        "repository": repo, "action": "verification.record"})["items"]
    assert sorted((a["actor"]["name"], a["status"]) for a in recorded) == [
        ("gg-alice", 403), ("gg-ci", 422), ("gg-ci-develop", 201), ("gg-ci-develop", 403)]


# -- hostile callers -----------------------------------------------------------------------------
def test_another_teams_token_cannot_approve_record_or_list_secret_app(gates: Gates,
                                                                      tmp_path: Path):
    image = push(gates.stack, tmp_path, "gates-secret", "secret/app:v1.0.0")
    body = {"repository": "secret/app", "environment": "production", "digest": image.digest}
    mine = gates.approve("gg-alice", "secret/app", image.digest)  # glob:* of its policy
    for who in ("gg-release-team-a", "gg-ci-team-a"):
        refused = gates.refused(who, "POST", "/api/v1/approvals", 403, "forbidden", json=body)
        assert refused["message"] == (f"token '{who}' is not allowed on repository "
                                      "'secret/app' (allowed: team-a/*)")
        gates.refused(who, "POST", "/api/v1/verifications", 403, "forbidden", json={
            **body, "environment": "staging", "name": "acceptance", "result": "passed"})
        for path in ("/api/v1/approvals", "/api/v1/verifications"):
            gates.refused(who, "GET", path, 403, "forbidden",
                          params={"repository": "secret/app"})
            # nothing of other teams (the shared stack holds team-a records of other tests)
            listed = gates.ok(who, "GET", path, params={"limit": 500})["items"]
            assert [i for i in listed if not i["repository"].startswith("team-a/")] == []
        # another team's approval is not even there for it
        gates.refused(who, "DELETE", f"/api/v1/approvals/{mine['id']}", 404, "not_found")
    assert [a["id"] for a in gates.ok("gg-alice", "GET", "/api/v1/approvals", params={
        "repository": "secret/app"})["items"]] == [mine["id"]]


@pytest.mark.parametrize("path,forged,field", [
    ("/api/v1/approvals", {"approver": "gg-alice"}, "approver"),
    ("/api/v1/approvals", {"expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
    ("/api/v1/approvals", {"digest": "sha256:NOTHEX"}, "digest"),
    ("/api/v1/approvals", {"digest": "v1.0.0"}, "digest"),
    ("/api/v1/approvals", {"repository": 5}, "repository"),
    ("/api/v1/verifications", {"recorded_by": "gg-alice"}, "recorded_by"),
    ("/api/v1/verifications", {"digest": "sha256:" + "a" * 63}, "digest"),
    ("/api/v1/verifications", {"result": "skipped"}, "result"),
    ("/api/v1/verifications", {"name": "Acceptance Tests"}, "name"),
    ("/api/v1/verifications", {"url": "javascript:alert(1)"}, "url"),
])
def test_forged_bodies_are_422_naming_the_field(gates: Gates, path: str, forged: dict,
                                                field: str):
    base = {"repository": "gates/app", "environment": "staging",
            "digest": "sha256:" + "b" * 64}
    if path.endswith("verifications"):
        base.update(name="acceptance", result="passed")
    who = "gg-root"  # may do both: only the body is wrong
    refused = gates.refused(who, "POST", path, 422, "invalid_request",
                            json={**base, **forged})
    assert list(refused["errors"]) == [field], refused


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_verify_approve_list_withdraw_and_promote(gates: Gates):
    repo = "gates/cli"
    digest = gates.staged(repo, "gates-cli")
    as_bot = {"TAGWARDEN_TOKEN": gates.tokens["gg-release-bot"]}
    result = tw(gates.stack, "verify", "--repository", repo, "--env", "staging", "--name",
                "acceptance", "--result", "passed", "--url", "https://ci.example.com/jobs/7",
                ci={"TAGWARDEN_TOKEN": gates.tokens["gg-ci"]})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"recorded acceptance passed for {repo} {digest} in "
                                    "staging: vrf_"), result.stdout
    result = tw(gates.stack, "promote", "--repository", repo, "--from", "staging", "--to",
                "production", "--dry-run", ci=as_bot)
    assert result.returncode == 2, result.stderr
    assert "[promotion.approvals] 'production' needs 2 approval(s)" in result.stdout
    assert "0 valid, 2 missing. May approve: role:admin" in result.stdout
    made = []
    for who in ("gg-alice", "gg-release-1"):
        result = tw(gates.stack, "approve", "--repository", repo, "--env", "production",
                    "--from", "staging", "--comment", "ok", "--json",
                    ci={"TAGWARDEN_TOKEN": gates.tokens[who]})
        assert result.returncode == 0, result.stderr
        made.append(json.loads(result.stdout))
        assert made[-1]["digest"] == digest and made[-1]["approver"] == who
    result = tw(gates.stack, "approve", "--repository", repo, "--list", "--env", "production",
                ci=as_bot)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CREATED", "ID", "ENV", "DIGEST", "APPROVER", "STATUS",
                                "EXPIRES", "COMMENT"]
    assert [line.split()[1] for line in lines[1:]] == [made[1]["id"], made[0]["id"]]
    result = tw(gates.stack, "approve", "--withdraw", made[0]["id"], ci=as_bot)
    assert result.returncode == 1
    assert "forbidden: approval" in result.stderr
    result = tw(gates.stack, "approve", "--withdraw", made[0]["id"],
                ci={"TAGWARDEN_TOKEN": gates.tokens["gg-alice"]})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"withdrew approval {made[0]['id']} of {repo}")
    result = tw(gates.stack, "promote", "--repository", repo, "--from", "staging", "--to",
                "production", ci=as_bot)
    assert result.returncode == 2
    assert "1 valid (gg-release-1), 1 missing" in result.stderr
    tw(gates.stack, "approve", "--repository", repo, "--env", "production", "--digest", digest,
       ci={"TAGWARDEN_TOKEN": gates.tokens["gg-root"]})
    result = tw(gates.stack, "promote", "--repository", repo, "--from", "staging", "--to",
                "production", "--json", ci=as_bot)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["approvals"]) == 2
    result = tw(gates.stack, "verify", "--repository", repo, "--list", "--env", "staging",
                ci=as_bot)
    assert result.returncode == 0 and "acceptance  passed  gg-ci" in result.stdout, result
