"""Disaster recovery on real processes: a history, a backup, Redis destroyed, an empty Redis,
a restore, and proof that nothing governance held was lost (issue 21)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from service.store import key
from testkit import oci, procs
from tests.faults.conftest import report, start_fault_stack
from tests.faults.test_faults import _history, _pointer, _push, _registry_tag
from tests.integration.conftest import Stack
from tests.integration.test_webhooks import wait_for

REPO = "dr/app"
ENVS = ("develop", "staging", "production")
POLICY = {"name": "dr", "repositories": ["dr/*"], "scan_on_push": False,
          "promotion": {"develop": {}, "staging": {"from": "develop"},
                        "production": {"from": "staging", "approvals": {
                            "required": 1, "approvers": ["token:dr-approver"]}}}}
# what the hostile restores below are measured against
SMALL_LIMIT = 2 * 1024 * 1024


def _api(stack: Stack, token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def _token(stack: Stack, name: str, role: str, **extra: object) -> dict:
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/tokens", timeout=10,
                              json={"name": name, "role": role, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()


def _cli(stack: Stack, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "tagwarden"), *argv],
                          env=stack.cli_env, capture_output=True, text=True, timeout=600)


def _all(stack: Stack, path: str, **params: str) -> list[dict]:
    items, cursor = [], None
    while True:
        query = {**params, "limit": "500", **({"cursor": cursor} if cursor else {})}
        page = stack.admin().get(f"{stack.gw_url}{path}", params=query, timeout=10).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _state(stack: Stack) -> dict:
    """Everything the drill proves identical, as the API shows it (and the history streams'
    ids, as Redis holds them: cursors handed out before the disaster keep working)."""
    admin, url = stack.admin(), stack.gw_url
    r = stack.redis_client()
    return {
        "pointers": admin.get(f"{url}/api/v1/environments", params={"repository": REPO},
                              timeout=10).json()["environments"],
        "history": {env: _history(stack, REPO, env) for env in ENVS},
        "ids": [entry_id for entry_id, _ in r.xrange(key("history", "all"))],
        "env_ids": {env: [i for i, _ in r.xrange(key("history", "env", REPO, env))]
                    for env in ENVS},
        "policy": admin.get(f"{url}/api/v1/policies/dr", timeout=10).json(),
        "bindings": admin.get(f"{url}/api/v1/tag-bindings", params={"repository": REPO},
                              timeout=10).json()["items"],
        "approvals": _all(stack, "/api/v1/approvals", repository=REPO),
        "verifications": _all(stack, "/api/v1/verifications", repository=REPO),
        "tokens": admin.get(f"{url}/api/v1/tokens", timeout=10).json(),
        "subscriptions": admin.get(f"{url}/api/v1/subscriptions", timeout=10).json(),
    }


def _build_history(stack: Stack, tmp_path: Path, ci: str, approver: str) -> list[oci.Image]:
    """A policy, tokens, three releases (bound tags), approvals, a verification, 200
    promotions with rollbacks among them."""
    assert stack.admin().put(f"{stack.gw_url}/api/v1/policies/dr", json=POLICY,
                             timeout=10).status_code == 200
    images = [oci.simple_image(f"dr-{i}") for i in range(3)]
    for i, image in enumerate(images):
        _push(stack, tmp_path, image, f"{REPO}:v1.0.{i}")
    assert stack.admin().post(f"{stack.gw_url}/api/v1/subscriptions", timeout=10, json={
        "url": "http://127.0.0.1:9/dr", "events": ["promotion.succeeded"],
        "secret": "s" * 24}).status_code == 201
    ci_api, approver_api = _api(stack, ci), _api(stack, approver)
    for image in images:
        made = approver_api.post(f"{stack.gw_url}/api/v1/approvals", timeout=10, json={
            "repository": REPO, "environment": "production", "digest": image.digest})
        assert made.status_code == 201, made.text
    verified = ci_api.post(f"{stack.gw_url}/api/v1/verifications", timeout=10, json={
        "repository": REPO, "digest": images[0].digest, "environment": "staging",
        "name": "acceptance", "result": "passed"})
    assert verified.status_code == 201, verified.text
    made = rolled = 0
    while made < 200:
        image = images[made % 3]
        env = ENVS[(made // 3) % 3]
        if made and made % 40 == 0:
            resp = ci_api.post(f"{stack.gw_url}/api/v1/rollbacks", timeout=30,
                               json={"repository": REPO, "environment": "develop"})
            rolled += 1
        else:
            resp = ci_api.post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
                "repository": REPO, "environment": env, "digest": image.digest,
                "reason": f"drill {made}"})
        assert resp.status_code == 201, (made, resp.text)
        made += 1
    assert rolled == 4
    return images


def _destroy_redis(stack: Stack) -> None:
    """Stop Redis and delete its data directory; start an empty one on the same port. An RQ
    worker exits when Redis goes away (its supervisor starts it again: compose's restart
    policy, systemd); the gateway stays up and reconnects by itself."""
    assert stack.worker is not None
    stack.worker.stop()
    stack.redis.stop()
    data = stack.workdir / "redis"
    shutil.rmtree(data)
    data.mkdir()
    stack.redis.start()
    stack.worker.start(wait=False)


def test_restore_drill_loses_nothing(tmp_path: Path):
    stack = start_fault_stack(tmp_path)
    try:
        ci = _token(stack, "dr-ci", "ci", repositories=["dr/*"])["token"]
        approver = _token(stack, "dr-approver", "reader")["token"]
        images = _build_history(stack, tmp_path, ci, approver)
        before = _state(stack)
        assert sum(len(h) for h in before["history"].values()) == 200
        assert len(before["ids"]) == 200 and len(before["approvals"]) == 3
        assert {b["tag"] for b in before["bindings"]} == {"v1.0.0", "v1.0.1", "v1.0.2"}

        backup = tmp_path / "backup.ndjson"
        t0 = time.monotonic()
        done = _cli(stack, "backup", "--out", str(backup))
        backup_s = time.monotonic() - t0
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in backup.read_text().splitlines()]
        assert lines[0]["kind"] == "header" and lines[0]["version"] == 1
        counts = lines[-1]["counts"]
        assert lines[-1]["kind"] == "footer"
        assert {k: counts[k] for k in ("approval", "binding", "pointer", "policy", "promotion",
                                       "subscription", "token", "verification")} == {
            "approval": 3, "binding": 3, "pointer": 3, "policy": 1, "promotion": 200,
            "subscription": 1, "token": 2, "verification": 1}
        assert not any("secret" in json.dumps(line) and line["kind"] == "token"
                       for line in lines)  # hashes only

        # after the backup: a promotion the backup cannot know about
        staging = before["pointers"][1]["digest"]
        after_digest = next(i.digest for i in images if i.digest != _pointer(
            stack, REPO, "develop"))
        late = _api(stack, ci).post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
            "repository": REPO, "environment": "develop", "digest": after_digest,
            "reason": "after the backup"})
        assert late.status_code == 201, late.text
        backed_up_develop = before["pointers"][0]["digest"]

        _destroy_redis(stack)
        assert stack.redis_client().dbsize() == 0
        # the empty store knows no token: the old ones are refused, not served from memory
        wait_for(lambda: _api(stack, ci).get(f"{stack.gw_url}/api/v1/policies",
                                             timeout=5).status_code == 401, timeout=30)

        t0 = time.monotonic()
        done = _cli(stack, "restore", str(backup))
        restore_s = time.monotonic() - t0
        assert done.returncode == 0, done.stderr
        assert "promotion 200" in done.stdout
        again = _cli(stack, "restore", str(backup))  # the store holds state now
        assert again.returncode == 1 and "conflict" in again.stderr, again.stderr

        # reconciliation finds the late promotion in the registry and records it
        def reconciled() -> list[dict]:
            return [r for r in _history(stack, REPO, "develop") if r["kind"] == "reconciled"]

        found = wait_for(reconciled, timeout=60, interval=0.5)
        assert len(found) == 1
        assert (found[0]["digest"], found[0]["previous_digest"]) == (after_digest,
                                                                     backed_up_develop)
        assert found[0]["source"] == {"registry": "develop"}
        assert _pointer(stack, REPO, "develop") == after_digest
        assert _registry_tag(stack, REPO, "develop") == after_digest  # not "repaired" away
        events = stack.admin().get(f"{stack.gw_url}/api/v1/events", timeout=10, params={
            "repository": REPO, "action": "restore.reconciled"}).json()["items"]
        assert [(e["expected_digest"], e["found_digest"]) for e in events] == [
            (backed_up_develop, after_digest)]

        after = _state(stack)
        assert after["history"]["develop"][1:] == before["history"]["develop"]
        for env in ("staging", "production"):
            assert after["history"][env] == before["history"][env]
            assert after["env_ids"][env] == before["env_ids"][env]
        assert after["env_ids"]["develop"][:-1] == before["env_ids"]["develop"]
        assert after["ids"][:-1] == before["ids"]
        assert after["pointers"][1:] == before["pointers"][1:]
        assert after["pointers"][1]["digest"] == staging
        for name in ("policy", "bindings", "approvals", "verifications", "tokens",
                     "subscriptions"):
            assert after[name] == before[name], name
        # old tokens work: the ci token promotes, the approver's approvals still count
        prod = _api(stack, ci).post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
            "repository": REPO, "environment": "production", "digest": staging})
        assert prod.status_code == 201, prod.text
        assert len(prod.json()["approvals"]) == 1
        # an immutable tag is still bound: re-pushing v1.0.0 with other content is refused
        layout = oci.write_layout(tmp_path / "repush", {"img": oci.simple_image("dr-other")})
        repush = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{REPO}:v1.0.0",
                                 creds=f"ci:{ci}")
        assert repush.returncode != 0 and "push.immutable" in repush.stderr, repush.stderr
        report("restore drill", promotions=200, backup_bytes=backup.stat().st_size,
               backup_s=round(backup_s, 2), restore_s=round(restore_s, 2),
               reconciled=len(found), lost=0)
    finally:
        stack.stop()


def _forged(valid: list[str]) -> dict[str, bytes]:
    """Broken variants of a valid backup stream."""
    header, *body = valid
    promotion = next(i for i, line in enumerate(valid) if '"kind":"promotion"' in line)
    bad_digest = json.loads(valid[promotion])
    bad_digest["record"]["digest"] = "sha256:xyz"
    pointer = next(i for i, line in enumerate(valid) if '"kind":"pointer"' in line)
    moved = json.loads(valid[pointer])
    moved["pointer"]["digest"] = "sha256:" + "0" * 64
    footer = json.loads(valid[-1])
    footer["counts"]["promotion"] += 1

    def joined(lines: list[str]) -> bytes:
        return ("\n".join(lines) + "\n").encode()

    def swap(index: int, value: dict) -> bytes:
        return joined(valid[:index] + [json.dumps(value)] + valid[index + 1:])

    return {
        "not json": joined([header, "{not json", *body]),
        "unknown kind": joined([header, '{"kind": "shell", "run": "rm -rf /"}', *body]),
        "no header": joined(body),
        "header twice": joined([header, header, *body]),
        "truncated": joined(valid[:-1]),
        "bad digest": swap(promotion, bad_digest),
        "pointer not the history's": swap(pointer, moved),
        "footer miscounted": swap(len(valid) - 1, footer),
        "unknown field": joined([header.replace('"kind"', '"extra":1,"kind"'), *body]),
        "line too long": joined([header, '{"kind":"policy","policy":"' + "a" * (1 << 20) + '"}',
                                 *body]),
        "oversized": joined(valid) + (b" " * 500_000 + b"\n") * 5,
    }


def _governance_keys(stack: Stack) -> list[str]:
    r = stack.redis_client()
    return sorted(k for k in r.scan_iter(match="tw:*") if not k.startswith((
        "tw:rate", "tw:authfail", "tw:events", "tw:audit", "tw:tags", "tw:tagmap")))


def test_forged_or_oversized_streams_write_nothing_and_live_state_is_refused(tmp_path: Path):
    """A backup of one stack, broken eleven ways, restored into an empty one: each a 4xx naming
    the line, nothing written; the intact stream then loads, and a second restore is 409."""
    source = start_fault_stack(tmp_path / "source", worker=False)
    try:
        assert source.admin().put(f"{source.gw_url}/api/v1/policies/dr", json=POLICY,
                                  timeout=10).status_code == 200
        image = oci.simple_image("dr-forged")
        _push(source, tmp_path, image, f"{REPO}:v2.0.0")
        assert source.admin().post(f"{source.gw_url}/api/v1/promotions", timeout=30, json={
            "repository": REPO, "environment": "develop", "tag": "v2.0.0"}).status_code == 201
        ci = _token(source, "forged-ci", "ci", repositories=["dr/*"])["token"]
        other = _token(source, "other-team", "ci", repositories=["other/*"])["token"]
        for token in (ci, other):  # another team's (or any non-admin) token: 403
            assert _api(source, token).get(f"{source.gw_url}/api/v1/backup",
                                           timeout=10).status_code == 403
            refused = _api(source, token).post(f"{source.gw_url}/api/v1/restore", data=b"x",
                                               timeout=10)
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        valid = source.admin().get(f"{source.gw_url}/api/v1/backup", timeout=30).text
        # live state: refused before the body is read, nothing changed
        live = source.admin().post(f"{source.gw_url}/api/v1/restore", data=valid, timeout=30)
        assert live.status_code == 409 and live.json()["code"] == "conflict", live.text
    finally:
        source.stop()
    lines = valid.splitlines()
    target = start_fault_stack(tmp_path / "target", worker=False,
                               TAGWARDEN_RESTORE_MAX_BYTES=str(SMALL_LIMIT))
    try:
        empty = _governance_keys(target)
        url = f"{target.gw_url}/api/v1/restore"
        for name, body in _forged(lines).items():
            for mode in ("empty-only", "replace"):
                resp = target.admin().post(url, params={"mode": mode}, data=body, timeout=30,
                                           headers={"Content-Type": "application/x-ndjson"})
                expected = 413 if name == "oversized" else 400
                assert resp.status_code == expected, (name, mode, resp.text)
                assert resp.json()["code"] in ("invalid_request", "payload_too_large")
                assert _governance_keys(target) == empty, (name, mode)
        bad = target.admin().post(url, params={"mode": "merge"}, data=valid, timeout=30)
        assert bad.status_code == 422 and "mode" in bad.json()["errors"], bad.text
        ok = target.admin().post(url, data=valid, timeout=30,
                                 headers={"Content-Type": "application/x-ndjson"})
        assert ok.status_code == 201, ok.text
        declared = {k: v for k, v in json.loads(lines[-1])["counts"].items() if v}
        assert ok.json()["restored"] == declared
        assert {k: declared[k] for k in ("policy", "promotion", "pointer", "token",
                                         "binding")} == {"policy": 1, "promotion": 1,
                                                         "pointer": 1, "token": 2, "binding": 1}
        again = target.admin().post(url, data=valid, timeout=30)
        assert again.status_code == 409 and again.json()["code"] == "conflict"
        assert _api(target, ci).get(f"{target.gw_url}/api/v1/promotions", timeout=10,
                                    params={"repository": REPO}).status_code == 200
        assert _api(target, f"tw_{uuid.uuid4().hex}").get(
            f"{target.gw_url}/api/v1/policies", timeout=10).status_code == 401
    finally:
        target.stop()
    assert procs.ADMIN_TOKEN not in valid  # the bootstrap token is configuration, not state
