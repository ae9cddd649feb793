"""The CI subcommands of `tagwarden` (promote, rollback, history, status) against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.ops.cli.main import CI_SYSTEMS
from testkit.procs import ADMIN_TOKEN
from tests.integration.conftest import Stack
from tests.integration.test_promotions import push

TAGWARDEN = str(Path(sys.executable).parent / "tagwarden")
POLICY = {
    "name": "cli",
    "repositories": ["cli/*"],
    "promotion": {
        "develop": {},
        "staging": {"from": "develop", "tags": ["semver"]},
        "production": {"from": "staging", "tags": ["semver"]},
    },
}
CI_VARIABLES = {run_var for _, run_var, _ in CI_SYSTEMS} | {
    var for _, _, step_vars in CI_SYSTEMS for var in step_vars} | {"GITHUB_RUN_ATTEMPT"}


@pytest.fixture(scope="module")
def cli_policy(stack: Stack) -> dict:
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/cli", json=POLICY, timeout=10)
    assert resp.status_code == 200, resp.text
    return POLICY


def tw(stack: Stack, *args: str, ci: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess:
    """Run the console script with the stack's URL and the admin token in its environment;
    the token must never show up in what it prints."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TAGWARDEN_") and k not in CI_VARIABLES}
    env.update({"TAGWARDEN_URL": stack.gw_url, "TAGWARDEN_TOKEN": ADMIN_TOKEN, **(ci or {})})
    result = subprocess.run([TAGWARDEN, *args], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert ADMIN_TOKEN not in result.stdout and ADMIN_TOKEN not in result.stderr, result
    return result


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess, code: int = 0) -> dict:
    assert result.returncode == code, (result.stdout, result.stderr)
    return json.loads(result.stdout)


def status_of(stack: Stack, repo: str) -> dict[str, str | None]:
    state = as_json(tw(stack, "status", "--repository", repo, "--json"))
    return {e["name"]: e["digest"] for e in state["environments"]}


def test_promote_through_stages_rollback_status_and_history(stack: Stack, cli_policy,
                                                           tmp_path: Path):
    repo = "cli/flow"
    one = push(stack, tmp_path, "cli-flow-1", f"{repo}:v1.0.0")
    two = push(stack, tmp_path, "cli-flow-2", f"{repo}:v1.1.0")

    out = ok(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop",
                "--reason", "first build"))
    assert f"promoted {repo} to develop: {one.digest}" in out
    out = ok(tw(stack, "promote", "--repository", repo, "--from", "develop", "--to", "staging"))
    assert one.digest in out and "env develop" in out
    record = as_json(tw(stack, "promote", "--repository", repo, "--from", "staging",
                        "--to", "production", "--json"))
    assert record["id"].startswith("prm_")
    assert record["digest"] == one.digest and record["environment"] == "production"
    assert record["source"] == {"environment": "staging"} and record["policy"] == "cli"
    first_prod = record["id"]

    ok(tw(stack, "promote", "--repository", repo, "--tag", "v1.1.0", "--to", "develop"))
    ok(tw(stack, "promote", "--repository", repo, "--digest", two.digest, "--to", "staging"))
    out = ok(tw(stack, "promote", "--repository", repo, "--from", "staging",
                "--to", "production", "--expected-digest", one.digest))
    assert two.digest in out
    assert status_of(stack, repo) == {"develop": two.digest, "staging": two.digest,
                                      "production": two.digest}

    out = ok(tw(stack, "rollback", "--repository", repo, "--env", "production",
                "--reason", "burning"))
    assert f"rolled back {repo} production to {one.digest}" in out
    assert f"rollback-to {first_prod}" in out
    text = ok(tw(stack, "status", "--repository", repo))
    prod_line = next(line for line in text.splitlines() if line.startswith("production"))
    assert one.digest in prod_line and "v1.0.0" in prod_line
    assert status_of(stack, repo)["production"] == one.digest

    hist = as_json(tw(stack, "history", "--repository", repo, "--env", "production", "--json"))
    assert [r["kind"] for r in hist["items"]] == ["rollback", "promotion", "promotion"]
    assert [r["digest"] for r in hist["items"]] == [one.digest, two.digest, one.digest]
    assert hist["items"][-1]["id"] == first_prod
    times = [r["created_at"] for r in hist["items"]]
    assert times == sorted(times, reverse=True)

    everything = as_json(tw(stack, "history", "--repository", repo, "--json"))
    paged = as_json(tw(stack, "history", "--repository", repo, "--limit", "2", "--all",
                       "--json"))
    assert len(everything["items"]) == 7 and paged["next_cursor"] is None
    assert [r["id"] for r in paged["items"]] == [r["id"] for r in everything["items"]]
    one_page = as_json(tw(stack, "history", "--repository", repo, "--limit", "2", "--json"))
    assert len(one_page["items"]) == 2 and one_page["next_cursor"]

    table = ok(tw(stack, "history", "--repository", repo, "--all", "--limit", "3"))
    lines = table.splitlines()
    assert lines[0].split() == ["TIME", "ENV", "KIND", "DIGEST", "SOURCE", "ACTOR", "REASON"]
    assert len(lines) == 8
    newest = lines[1].split()
    assert newest[1:4] == ["production", "rollback", one.digest[:19]]
    assert lines[1].rstrip().endswith("burning")
    assert lines[-1].split()[1:4] == ["develop", "promotion", one.digest[:19]]
    assert "tag v1.0.0" in lines[-1] and "first build" in lines[-1]


def test_policy_denials_exit_2_and_dry_runs(stack: Stack, cli_policy, tmp_path: Path):
    repo = "cli/gates"
    image = push(stack, tmp_path, "cli-gates-1", f"{repo}:latest", f"{repo}:v2.0.0")

    skipped = tw(stack, "promote", "--repository", repo, "--tag", "v2.0.0", "--to", "production")
    assert skipped.returncode == 2, (skipped.stdout, skipped.stderr)
    assert "DENIED by policy 'cli':" in skipped.stderr
    assert "  - [promotion.from] " in skipped.stderr

    ok(tw(stack, "promote", "--repository", repo, "--tag", "latest", "--to", "develop"))
    ok(tw(stack, "promote", "--repository", repo, "--tag", "latest", "--to", "staging"))
    latest = tw(stack, "promote", "--repository", repo, "--tag", "latest", "--to", "production")
    assert latest.returncode == 2
    assert latest.stderr.splitlines()[0] == "DENIED by policy 'cli':"
    assert latest.stderr.splitlines()[1].startswith("  - [promotion.latest] ")
    denied = as_json(tw(stack, "promote", "--repository", repo, "--tag", "latest",
                        "--to", "production", "--json"), code=2)
    assert denied["code"] == "policy_denied"
    assert [v["rule"] for v in denied["violations"]] == ["promotion.latest"]

    dry = tw(stack, "promote", "--repository", repo, "--tag", "latest", "--to", "production",
             "--dry-run")
    assert dry.returncode == 2 and "would be denied" in dry.stdout
    assert "  - [promotion.latest] " in dry.stdout
    allowed = ok(tw(stack, "promote", "--repository", repo, "--tag", "v2.0.0",
                    "--to", "production", "--dry-run"))
    assert "would be allowed by policy 'cli'" in allowed and image.digest in allowed
    preview = as_json(tw(stack, "promote", "--repository", repo, "--tag", "v2.0.0",
                         "--to", "production", "--dry-run", "--json"))
    assert preview["dry_run"] is True and preview["allowed"] is True and preview["id"] is None
    assert status_of(stack, repo)["production"] is None

    done = as_json(tw(stack, "promote", "--repository", repo, "--tag", "v2.0.0",
                      "--to", "production", "--json"))
    assert done["digest"] == image.digest


def test_other_errors_exit_1(stack: Stack, cli_policy, tmp_path: Path):
    repo = "cli/errors"
    image = push(stack, tmp_path, "cli-errors-1", f"{repo}:v1.0.0")

    missing = tw(stack, "promote", "--repository", repo, "--tag", "v9.9.9", "--to", "develop")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: not_found: ")
    missing_json = as_json(tw(stack, "promote", "--repository", repo, "--tag", "v9.9.9",
                              "--to", "develop", "--json"), code=1)
    assert missing_json["code"] == "not_found"

    unknown_env = tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "qa")
    assert unknown_env.returncode == 1
    assert "invalid_request" in unknown_env.stderr
    assert "\n  environment: must be one of develop, staging, production" in unknown_env.stderr

    ok(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop"))
    conflict = tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop",
                  "--expected-digest", "sha256:" + "f" * 64)
    assert conflict.returncode == 1 and conflict.stderr.startswith("error: conflict: ")
    nothing = tw(stack, "rollback", "--repository", repo, "--env", "production")
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: not_found: ")

    down = tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "staging",
              "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and down.stdout == ""
    assert "could not reach" in down.stderr and "http://127.0.0.1:9" in down.stderr
    for command in (["history", "--repository", repo], ["status", "--repository", repo]):
        result = tw(stack, *command, "--url", "http://127.0.0.1:9", "--timeout", "5")
        assert result.returncode == 1 and "http://127.0.0.1:9" in result.stderr

    # an explicit --token works the same and is not echoed either
    out = ok(tw(stack, "status", "--repository", repo, "--token", ADMIN_TOKEN))
    assert image.digest in out


def test_idempotency_key_replays(stack: Stack, cli_policy, tmp_path: Path):
    repo = "cli/idem"
    push(stack, tmp_path, "cli-idem-1", f"{repo}:v1.0.0")
    command = ["promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop",
               "--idempotency-key", "K-cli-idem", "--json"]
    first = as_json(tw(stack, *command))
    again = as_json(tw(stack, *command))
    assert again["id"] == first["id"]
    other = tw(stack, *command[:-1], "--reason", "different")
    assert other.returncode == 1 and "error: idempotency_mismatch: " in other.stderr
    hist = as_json(tw(stack, "history", "--repository", repo, "--json"))
    assert [r["id"] for r in hist["items"]] == [first["id"]]


def test_ci_run_derives_a_stable_key(stack: Stack, cli_policy, tmp_path: Path):
    repo = "cli/ci"
    push(stack, tmp_path, "cli-ci-1", f"{repo}:v1.0.0")
    command = ["promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop", "--json"]
    github = {"GITHUB_RUN_ID": "4242", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_REPOSITORY": "o/r",
              "GITHUB_WORKFLOW": "deploy", "GITHUB_JOB": "promote", "GITHUB_ACTION": "__run"}
    first = as_json(tw(stack, *command, ci=github))
    rerun = as_json(tw(stack, *command, ci={**github, "GITHUB_RUN_ATTEMPT": "2"}))
    assert rerun["id"] == first["id"]
    mismatch = tw(stack, *command[:-1], "--reason", "changed", ci=github)
    assert mismatch.returncode == 1 and "idempotency_mismatch" in mismatch.stderr
    assert "GITHUB_RUN_ID=4242" in mismatch.stderr
    gitlab = {"CI_PIPELINE_ID": "77", "CI_PROJECT_ID": "3", "CI_JOB_NAME": "promote"}
    retried = [as_json(tw(stack, *command, ci=gitlab))["id"] for _ in range(2)]
    assert retried[0] == retried[1] != first["id"]
    next_run = as_json(tw(stack, *command, ci={**github, "GITHUB_RUN_ID": "4243"}))
    outside_ci = [as_json(tw(stack, *command))["id"] for _ in range(2)]
    ids = [first["id"], retried[0], next_run["id"], *outside_ci]
    assert len(set(ids)) == 5
    hist = as_json(tw(stack, "history", "--repository", repo, "--json"))
    assert [r["id"] for r in hist["items"]] == ids[::-1]


def _prod(stack: Stack, repo: str) -> list[dict]:
    return as_json(tw(stack, "history", "--repository", repo, "--env", "production",
                      "--json"))["items"]


def test_retried_ci_rollback_never_rolls_back_twice(stack: Stack, cli_policy, tmp_path: Path):
    repo = "cli/retry"
    good = push(stack, tmp_path, "cli-retry-1", f"{repo}:v1.0.0")
    bad = push(stack, tmp_path, "cli-retry-2", f"{repo}:v1.1.0")
    newer = push(stack, tmp_path, "cli-retry-3", f"{repo}:v1.2.0")
    run_a = {"CI_PIPELINE_ID": "500", "CI_PROJECT_ID": "9", "CI_JOB_NAME": "deploy"}
    run_b = {**run_a, "CI_PIPELINE_ID": "501"}
    for ci, tag in ((run_a, "v1.0.0"), (run_b, "v1.1.0")):
        ok(tw(stack, "promote", "--repository", repo, "--tag", tag, "--to", "develop", ci=ci))
        ok(tw(stack, "promote", "--repository", repo, "--from", "develop", "--to", "staging",
              ci=ci))
        ok(tw(stack, "promote", "--repository", repo, "--from", "staging", "--to",
              "production", ci=ci))
    assert status_of(stack, repo)["production"] == bad.digest

    rollback = ["rollback", "--repository", repo, "--env", "production", "--reason", "failed"]
    first = tw(stack, *rollback, ci=run_b)
    assert ok(first).splitlines()[0] == f"rolled back {repo} production to {good.digest}"
    retried = tw(stack, *rollback, ci=run_b)
    assert ok(retried).splitlines()[0] == (
        f"replayed: rolled back {repo} production to {good.digest} (the first answer to this "
        "Idempotency-Key; nothing changed now)")
    replay_json = tw(stack, *rollback, "--json", ci=run_b)
    assert json.loads(ok(replay_json))["digest"] == good.digest
    assert replay_json.stderr.startswith("replayed: rolled back")
    assert status_of(stack, repo)["production"] == good.digest
    history = _prod(stack, repo)
    assert [r["kind"] for r in history] == ["rollback", "promotion", "promotion"]
    assert history[0]["previous_digest"] == bad.digest
    assert history[0]["idempotency_key"].startswith("tagwarden-gitlab-")

    # run A never touched production since: its rollback would undo B's rollback -> refused
    stale = tw(stack, *rollback, ci=run_a)
    assert stale.returncode == 1 and stale.stderr.startswith("error: conflict: ")
    assert f"not the expected {good.digest}" not in stale.stderr
    assert "hint: --expected-digest is derived from the CI run (CI_PIPELINE_ID=500)" in stale.stderr
    # another run promoted after B's release: B's (new) rollback must not undo it
    for env in ("develop", "staging"):
        ok(tw(stack, "promote", "--repository", repo, "--digest", newer.digest, "--to", env))
    ok(tw(stack, "promote", "--repository", repo, "--digest", newer.digest, "--to",
          "production", "--expected-digest", good.digest))
    same_step = tw(stack, *rollback[:-1], "other reason", ci=run_b)
    assert same_step.returncode == 1
    assert same_step.stderr.startswith("error: idempotency_mismatch: ")
    other_step = tw(stack, *rollback, ci={**run_b, "CI_JOB_NAME": "rollback"})
    assert other_step.returncode == 1 and other_step.stderr.startswith(
        f"error: conflict: production of {repo} has moved since CI_PIPELINE_ID=501 promoted "
        f"{bad.digest}")
    assert status_of(stack, repo)["production"] == newer.digest
    assert len(_prod(stack, repo)) == 4


def test_rollback_to_a_promotion_id_and_explicit_expectation(stack: Stack, cli_policy,
                                                             tmp_path: Path):
    repo = "cli/rollto"
    one = push(stack, tmp_path, "cli-rollto-1", f"{repo}:v1.0.0")
    two = push(stack, tmp_path, "cli-rollto-2", f"{repo}:v2.0.0")
    first = as_json(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to",
                       "develop", "--json"))
    ok(tw(stack, "promote", "--repository", repo, "--tag", "v2.0.0", "--to", "develop"))
    wrong = tw(stack, "rollback", "--repository", repo, "--env", "develop", "--to", first["id"],
               "--expected-digest", one.digest)
    assert wrong.returncode == 1 and f"not the expected {one.digest}" in wrong.stderr
    out = ok(tw(stack, "rollback", "--repository", repo, "--env", "develop", "--to",
                first["id"], "--expected-digest", two.digest, "--idempotency-key", "K-rollto"))
    assert out.splitlines()[0] == f"rolled back {repo} develop to {one.digest}"
    assert f"rollback-to {first['id']}" in out
    again = ok(tw(stack, "rollback", "--repository", repo, "--env", "develop", "--to",
                  first["id"], "--expected-digest", two.digest, "--idempotency-key", "K-rollto"))
    assert again.startswith("replayed: rolled back")
    assert status_of(stack, repo)["develop"] == one.digest


def test_promote_replay_says_replayed(stack: Stack, cli_policy, tmp_path: Path):
    repo = "cli/replayed"
    image = push(stack, tmp_path, "cli-replayed-1", f"{repo}:v1.0.0")
    command = ["promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop"]
    ci = {"GITHUB_RUN_ID": "77001", "GITHUB_REPOSITORY": "o/r"}
    assert ok(tw(stack, *command, ci=ci)).startswith(f"promoted {repo} to develop: ")
    assert ok(tw(stack, *command, ci=ci)).splitlines()[0] == (
        f"replayed: promoted {repo} to develop: {image.digest} (the first answer to this "
        "Idempotency-Key; nothing changed now)")


def test_listings_of_nothing_are_errors_and_times_without_a_zone(stack: Stack, cli_policy,
                                                                 tmp_path: Path):
    repo = "cli/listing"
    image = push(stack, tmp_path, "cli-listing-1", f"{repo}:v1.0.0")
    ok(tw(stack, "promote", "--repository", repo, "--tag", "v1.0.0", "--to", "develop"))
    upper = tw(stack, "status", "--repository", "Team/App")
    assert upper.returncode == 1 and upper.stdout == ""
    assert upper.stderr.startswith("error: invalid_request: ")
    assert "  repository: not a registry repository name: lowercase" in upper.stderr
    for command in (["status"], ["history"]):
        missing = tw(stack, *command, "--repository", "cli/never-pushed")
        assert missing.returncode == 1 and missing.stdout == ""
        assert missing.stderr == ("error: not_found: repository 'cli/never-pushed' not found: "
                                  "it has no promotions and nothing in the registry\n")
    prod = tw(stack, "history", "--repository", repo, "--env", "prod")
    assert prod.returncode == 1 and prod.stderr.startswith(
        "error: invalid_request: unknown environment 'prod': policy 'cli' has develop, "
        "staging, production")

    naive = ok(tw(stack, "status", "--repository", repo, "--at", "2026-12-01 00:44:30"))
    assert naive.splitlines()[0].startswith(f"{repo} at 2026-12-01T00:44:30")
    nonsense = tw(stack, "status", "--repository", repo, "--at", "yesterday")
    assert nonsense.returncode == 1 and "e.g. 2026-11-24T03:12:00Z" in nonsense.stderr
    api = stack.admin().get(f"{stack.gw_url}/api/v1/environments", timeout=10,
                            params={"repository": repo, "at": "2026-12-01 00:44:30"})
    assert api.status_code == 422
    assert api.json()["errors"] == {"at": [
        "must be RFC 3339 with a time zone, e.g. 2026-11-24T03:12:00Z"]}

    # a tag added after develop's promotion: both environments show the digest's tags alike
    other = push(stack, tmp_path, "cli-listing-1", f"{repo}:v1.0.1")
    assert other.digest == image.digest
    ok(tw(stack, "promote", "--repository", repo, "--from", "develop", "--to", "staging"))
    state = as_json(tw(stack, "status", "--repository", repo, "--json"))
    tags = {e["name"]: e["tags"] for e in state["environments"]}
    assert tags == {"develop": ["v1.0.0", "v1.0.1"], "staging": ["v1.0.0", "v1.0.1"],
                    "production": []}


def test_json_body_without_content_type_says_so(stack: Stack, cli_policy):
    body = json.dumps({"repository": "cli/x", "environment": "develop", "tag": "v1"})
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", data=body, timeout=10)
    assert resp.status_code == 415
    assert resp.json() == {
        "code": "unsupported_media_type",
        "message": "the body was not read as JSON (it was sent with no Content-Type); send it "
                   "with Content-Type: application/json",
        "errors": {"body": ["the body was not read as JSON (it was sent with no Content-Type); "
                            "send it with Content-Type: application/json"]}}


def test_no_command_prints_a_traceback(stack: Stack, tmp_path: Path):
    unwritable = tw(stack, "openapi", "--out", str(tmp_path / "missing" / "openapi.yaml"))
    assert unwritable.returncode == 1 and "Traceback" not in unwritable.stderr
    assert unwritable.stderr.startswith("tagwarden openapi: error: FileNotFoundError: ")
    assert len(unwritable.stderr.splitlines()) == 1
    osv = tmp_path / "osv.zip"
    osv.write_bytes(b"not a zip")
    down = tw(stack, "vulndb", "import", str(osv), "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert down.stderr.startswith("error: could not reach Tagwarden at http://127.0.0.1:9")
    no_token = tw(stack, "vulndb", "import", str(osv), ci={"TAGWARDEN_TOKEN": ""})
    assert no_token.returncode == 1 and no_token.stderr.startswith("error: unauthorized: ")
