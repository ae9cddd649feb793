"""Fix-forward hotfixes and the post-mortem timeline against the real stack (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from service.domain.durations import format_time
from testkit import oci
from testkit import scan_fixtures as fixtures
from tests.integration.conftest import Stack
from tests.integration.test_scans import push_layout, scan, vulndb  # noqa: F401 - fixture
from tests.integration.test_webhooks import wait_for

REPO = "hotfix/app"
NOW = datetime.now(UTC)
POLICY = {
    "name": "hotfix", "repositories": ["hotfix/*"], "scan_on_push": False,
    "promotion": {
        "develop": {}, "staging": {"from": "develop"},
        "production": {
            "from": "staging", "soak": "1h",
            "freeze": [{"start": format_time(NOW - timedelta(hours=1)),
                        "end": format_time(NOW + timedelta(hours=6))}],
            "verified": {"in": "staging", "checks": ["acceptance"]},
            "scan": {"required": True, "max_severity": "medium"},
            "hotfix": {"bypass": ["from", "soak", "freeze", "verified"],
                       "approvals": {"required": 2,
                                     "approvers": ["token:hf-lead-1", "token:hf-lead-2"]}}},
    },
}
BYPASSED = ["promotion.from", "promotion.freeze", "promotion.verified"]


def _session(token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


@pytest.fixture(scope="module")
def world(stack: Stack, vulndb, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: F811
    """The policy, tokens (a ci pipeline, two leads, another team), a clean release and a
    vulnerable one (both scanned), a subscription for hotfix.succeeded."""
    admin = stack.admin()
    assert admin.put(f"{stack.gw_url}/api/v1/policies/hotfix", json=POLICY,
                     timeout=10).status_code == 200
    tokens = {}
    for name, role, repos in (("hf-ci", "ci", ["hotfix/*"]), ("hf-lead-1", "reader", ["*"]),
                              ("hf-lead-2", "reader", ["*"]),
                              ("hf-other-team", "ci", ["other/*"])):
        made = admin.post(f"{stack.gw_url}/api/v1/tokens", timeout=10,
                          json={"name": name, "role": role, "repositories": repos})
        assert made.status_code == 201, made.text
        tokens[name] = made.json()["token"]
    tmp = tmp_path_factory.mktemp("hotfix")
    clean = oci.simple_image("hotfix-clean")
    vulnerable = oci.Image(layers=fixtures.vulnerable_image_layers(),
                           labels={"purpose": "hotfix"})
    push_layout(stack, tmp, clean, f"{REPO}:v1.0.0")
    push_layout(stack, tmp, clean, f"{REPO}:latest")
    push_layout(stack, tmp, vulnerable, f"{REPO}:v1.0.1")
    sub = admin.post(f"{stack.gw_url}/api/v1/subscriptions", timeout=10, json={
        "url": "http://127.0.0.1:9/hotfix", "events": ["hotfix.succeeded"],
        "secret": "h" * 24, "repositories": ["hotfix/*"]})
    assert sub.status_code == 201, sub.text
    return {"tokens": tokens, "clean": clean.digest, "vulnerable": vulnerable.digest,
            "subscription": sub.json()["id"], "since": format_time(datetime.now(UTC))}


def _hotfix(stack: Stack, token: str, **body: object) -> requests.Response:
    return _session(token).post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
        "repository": REPO, "environment": "production", "hotfix": True, **body})


def _approve(stack: Stack, token: str, digest: str, hotfix: bool = True) -> requests.Response:
    return _session(token).post(f"{stack.gw_url}/api/v1/approvals", timeout=10, json={
        "repository": REPO, "environment": "production", "digest": digest, "hotfix": hotfix})


def _rules(resp: requests.Response) -> list[str]:
    return [v["rule"] for v in resp.json()["violations"]]


def test_a_hotfix_skips_only_the_listed_gates_with_its_approvals(stack: Stack, world: dict):
    ci, lead1, lead2 = (world["tokens"][n] for n in ("hf-ci", "hf-lead-1", "hf-lead-2"))
    clean = world["clean"]
    no_reason = _hotfix(stack, ci, digest=clean)
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["errors"]
    preview = _hotfix(stack, ci, digest=clean, reason="CVE fix", dry_run=True)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["dry_run"], body["allowed"], body["kind"]) == (True, False, "hotfix")
    # the scan gate is never bypassed; the hotfix approvals are missing; the rest is bypassed
    assert _rules(preview) == ["promotion.scan_required", "promotion.hotfix_approvals"]
    assert [v["rule"] for v in body["bypassed_violations"]] == BYPASSED
    assert body["bypassed"] == BYPASSED
    assert scan(stack, REPO, clean)["status"] == "succeeded"
    # an ordinary approval is not a hotfix approval (production has no approvals gate)
    plain = _approve(stack, lead1, clean, hotfix=False)
    assert plain.status_code == 422 and plain.json()["code"] == "invalid_request"
    assert _approve(stack, ci, clean).status_code == 403  # the pipeline is no approver
    first = _approve(stack, lead1, clean)
    assert first.status_code == 201 and first.json()["hotfix"] is True
    short = _hotfix(stack, ci, digest=clean, reason="CVE fix")
    assert short.status_code == 403 and _rules(short) == ["promotion.hotfix_approvals"]
    assert "1 missing" in short.json()["violations"][0]["message"]
    assert _approve(stack, lead2, clean).status_code == 201
    ordinary = _session(ci).post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
        "repository": REPO, "environment": "production", "digest": clean})
    assert ordinary.status_code == 403 and _rules(ordinary) == BYPASSED
    done = _hotfix(stack, ci, digest=clean, reason="CVE-2026-1 in the login path")
    assert done.status_code == 201, done.text
    record = done.json()
    assert (record["kind"], record["digest"], record["bypassed"]) == ("hotfix", clean, BYPASSED)
    assert sorted(record["approvals"]) == sorted([first.json()["id"], _approvals(stack)[0]])
    assert record["reason"] == "CVE-2026-1 in the login path" and record["actor"] == "hf-ci"
    audit = stack.admin().get(f"{stack.gw_url}/api/v1/audit", timeout=10,
                              params={"action": "promotion.create"}).json()["items"]
    assert any(a["target"].get("hotfix") is True and a["outcome"] == "success"
               and a["target"].get("repository") == REPO for a in audit)
    deliveries = wait_for(lambda: stack.admin().get(
        f"{stack.gw_url}/api/v1/subscriptions/{world['subscription']}/deliveries",
        timeout=10).json()["items"])
    assert [d["event"] for d in deliveries] == ["hotfix.succeeded"]


def _approvals(stack: Stack) -> list[str]:
    """Ids of the hotfix approvals of the clean digest by hf-lead-2."""
    items = stack.admin().get(f"{stack.gw_url}/api/v1/approvals", timeout=10, params={
        "repository": REPO, "environment": "production"}).json()["items"]
    return [a["id"] for a in items if a["approver"] == "hf-lead-2" and a.get("hotfix")]


def test_latest_and_the_severity_gate_are_never_bypassed(stack: Stack, world: dict):
    ci, lead1, lead2 = (world["tokens"][n] for n in ("hf-ci", "hf-lead-1", "hf-lead-2"))
    vulnerable = world["vulnerable"]
    assert scan(stack, REPO, vulnerable)["status"] == "succeeded"
    for lead in (lead1, lead2):
        assert _approve(stack, lead, vulnerable).status_code == 201
    severe = _hotfix(stack, ci, digest=vulnerable, reason="urgent")
    assert severe.status_code == 403 and _rules(severe) == ["promotion.severity"]
    for lead in (lead1, lead2):  # the clean digest is approved and scanned: only `latest`
        _approve(stack, lead, world["clean"])
    latest = _hotfix(stack, ci, tag="latest", reason="urgent")
    assert latest.status_code == 403 and _rules(latest) == ["promotion.latest"]


def test_a_policy_cannot_make_latest_or_scan_bypassable():
    from service.domain.schemas.policy import load_policy

    for bad in ("latest", "scan", "severity", "nonsense"):
        policy = {**POLICY, "promotion": {"production": {"hotfix": {
            "bypass": [bad], "approvals": {"required": 1, "approvers": ["role:admin"]}}}}}
        with pytest.raises(Exception) as caught:
            load_policy(policy)
        assert "promotion.production.hotfix.bypass.0" in caught.value.errors, bad


def test_a_rollback_names_the_promotion_it_reverted(stack: Stack, world: dict):
    ci = _session(world["tokens"]["hf-ci"])
    ids = []
    for digest in (world["clean"], world["vulnerable"]):
        made = ci.post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
            "repository": REPO, "environment": "develop", "digest": digest})
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    back = ci.post(f"{stack.gw_url}/api/v1/rollbacks", timeout=30,
                   json={"repository": REPO, "environment": "develop", "reason": "bad"})
    assert back.status_code == 201, back.text
    assert (back.json()["reverts"], back.json()["digest"]) == (ids[1], world["clean"])
    assert stack.admin().get(f"{stack.gw_url}/api/v1/promotions/{back.json()['id']}",
                             timeout=10).json()["reverts"] == ids[1]


def _parse(text: str) -> datetime:
    head, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + "." + (frac + "000000")[:6] + "+00:00")


def _timeline(stack: Stack, token: str | None = None, **params: object) -> requests.Response:
    session = _session(token) if token else stack.admin()
    return session.get(f"{stack.gw_url}/api/v1/timeline", timeout=10,
                       params={"repository": REPO, **params})


def test_the_timeline_merges_every_source_in_one_order(stack: Stack, world: dict):
    # after the tests above: pushes, scans, hotfix approvals, a hotfix, promotions, a rollback
    wanted = {"push", "scan", "approval", "hotfix", "promotion", "rollback"}

    def complete() -> list[dict] | None:
        items = _timeline(stack, limit=500).json()["items"]
        return items if wanted <= {i["kind"] for i in items} else None

    wait_for(complete, timeout=30)
    # the registry's notifications of the gateway's own tag writes arrive on their own time
    stable: list[list[dict]] = []

    def settled() -> list[dict] | None:
        stable.append(_timeline(stack, limit=500).json()["items"])
        return stable[-1] if len(stable) > 1 and stable[-1] == stable[-2] else None

    items = wait_for(settled, timeout=30, interval=1.0)
    times = [_parse(i["at"]) for i in items]
    assert times == sorted(times)
    assert {i["kind"] for i in items} <= wanted | {"push.denied", "drift", "verification"}
    pushes = [i for i in items if i["kind"] == "push"]
    assert {t for i in pushes for t in i["tags"]} >= {"v1.0.0", "v1.0.1", "latest"}
    hotfix = next(i for i in items if i["kind"] == "hotfix")
    assert hotfix["environment"] == "production" and hotfix["digest"] == world["clean"]
    assert hotfix["actor"] == "hf-ci" and "bypassed promotion.from" in hotfix["summary"]
    assert hotfix["ref"].startswith("promotion:prm_")
    rollback = next(i for i in items if i["kind"] == "rollback")
    assert "reverts prm_" in rollback["summary"]
    # the hotfix came after its approvals, which came after the clean digest's scan
    kinds = [i["kind"] for i in items]
    assert kinds.index("scan") < kinds.index("approval") < kinds.index("hotfix")
    # pages of 2 give exactly the same items, in the same order
    paged, cursor = [], None
    while True:
        page = _timeline(stack, limit=2, **({"cursor": cursor} if cursor else {})).json()
        paged += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert paged == items
    # one environment: its items and the repository-wide ones
    production = _timeline(stack, environment="production", limit=500).json()["items"]
    assert {i.get("environment") for i in production} <= {"production", None}
    assert "rollback" not in {i["kind"] for i in production}
    # a window: nothing before `since`
    later = _timeline(stack, since=hotfix["at"], limit=500).json()["items"]
    assert _parse(later[0]["at"]) >= _parse(hotfix["at"]) and len(later) < len(items)


def test_the_timeline_is_scoped_and_hostile_input_is_a_4xx(stack: Stack, world: dict):
    other = world["tokens"]["hf-other-team"]
    refused = _timeline(stack, other)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert _timeline(stack, cursor="bm90IG91cnM").status_code == 400
    assert _timeline(stack, since="yesterday").status_code == 422
    no_repo = stack.admin().get(f"{stack.gw_url}/api/v1/timeline", timeout=10)
    assert no_repo.status_code == 422 and "repository" in no_repo.json()["errors"]


def test_the_cli_prints_a_post_mortem_table(stack: Stack, world: dict):
    done = subprocess.run([str(Path(sys.executable).parent / "tagwarden"), "timeline",
                           "--repository", REPO, "--env", "production", "--since",
                           world["since"], "--format", "markdown"],
                          env=stack.cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"## Timeline of {REPO}"
    assert lines[2] == "| time (UTC) | what | environment | digest | tags | actor | details |"
    rows = [line for line in lines[4:] if line.startswith("| ")]
    assert any("| hotfix | production |" in row and "| hf-ci |" in row for row in rows)
    assert not any("| rollback |" in row for row in rows)
