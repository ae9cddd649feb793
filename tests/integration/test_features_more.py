"""More features the README promises, each on a stack of its own: the 409 of a retry while
the first idempotent attempt runs, reconciliation on its schedule (restore and record),
scans failing until a database is loaded then the rescan after an import, TAGWARDEN_VULNDB at
worker start, and the external scanner alone."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import requests
from rq import Queue

from testkit import oci, procs
from testkit import scan_fixtures as fixtures
from tests.helpers.harbor_double import HarborDouble
from tests.integration.conftest import TEST_ENV, Stack, start_stack
from tests.integration.test_features import api, put_policy
from tests.integration.test_promotions import push, registry_digest
from tests.integration.test_scans import _key, push_layout, scan
from tests.integration.test_webhooks import events, wait_for

ENVIRONMENTS = {"develop": {}, "staging": {"from": "develop"},
                "production": {"from": "staging"}}
NO_DB = ("no vulnerability database loaded: set TAGWARDEN_VULNDB or run "
         "`tagwarden vulndb import PATH`")


def policy(name: str, **extra) -> dict:
    return {"name": name, "repositories": [f"{name}/*"], "scan_on_push": False,
            "promotion": ENVIRONMENTS, **extra}


def promote(stack: Stack, headers: dict | None = None, **body) -> requests.Response:
    return api(stack, "POST", "/api/v1/promotions", json=body, headers=headers or {})


def osv_dir(directory: Path) -> Path:
    return fixtures.write_osv_dir(directory, fixtures.osv_fixture_records())


# -- 1. a retry while the first idempotent attempt is still running ---------------------------
def test_a_retry_while_the_first_attempt_runs_is_409_then_replays_it(tmp_path: Path):
    # the first attempt sleeps this long between the registry write and the Redis commit
    stack = start_stack(tmp_path, worker=False, TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE="10")
    try:
        put_policy(stack, policy("inflight"))
        repo = "inflight/app"
        image = push(stack, tmp_path, "inflight", f"{repo}:v1.0.0")
        key = {"Idempotency-Key": "ci-run-inflight"}
        body = {"repository": repo, "environment": "develop", "tag": "v1.0.0"}
        first: list[requests.Response] = []
        thread = threading.Thread(target=lambda: first.append(promote(stack, key, **body)))
        thread.start()
        # the registry tag is written: the first attempt now sits in its pause, key claimed
        wait_for(lambda: registry_digest(stack, repo, "develop") == image.digest, timeout=30,
                 interval=0.05)
        retry = promote(stack, key, **body)
        still_running = thread.is_alive()
        thread.join(60)
        assert still_running, "the first attempt ended before the retry: nothing was tested"
        assert retry.status_code == 409, retry.text
        assert retry.json()["code"] == "conflict"
        # the idempotency key refused it, not the promotion lock behind it
        assert retry.json()["message"] == (
            "a request with this Idempotency-Key is still in progress")
        assert first[0].status_code == 201, first[0].text
        assert first[0].json()["digest"] == image.digest
        replay = promote(stack, key, **body)
        assert replay.status_code == 201, replay.text
        assert replay.json() == first[0].json()
        history = api(stack, "GET", "/api/v1/promotions",
                      params={"repository": repo}).json()["items"]
        assert [r["id"] for r in history] == [first[0].json()["id"]]
    finally:
        stack.stop()


# -- 2. reconciliation on its schedule, with no registry notification to notice drift ----------
def quiet_stack(workdir: Path, **env_extra: str) -> Stack:
    """Like start_stack, but the registry notifies a port nobody listens on: only the
    reconciliation passes can see what happens behind the gateway's back."""
    redis_proc = procs.redis_server(workdir / "redis")
    registry = procs.registry_server(
        workdir / "registry", f"http://127.0.0.1:{procs.free_port()}/api/v1/webhooks/registry")
    env = procs.gateway_env(redis_proc.port, registry.port, **{**TEST_ENV, **env_extra})
    gateway = procs.gateway_server(workdir / "gateway", env)
    stack = Stack(redis_proc, registry, gateway, workdir, env)
    stack.worker = procs.worker_process(workdir / "worker", env)
    return stack


def finished_reconciles(stack: Stack) -> list[str]:
    queue = Queue("tagwarden", connection=stack.redis_client())
    return [j for j in queue.finished_job_registry.get_job_ids()
            if j.startswith("tagwarden-reconcile-")]


def test_scheduled_reconciliation_restores_drift_or_records_it(tmp_path: Path):
    stack = quiet_stack(tmp_path, TAGWARDEN_RECONCILE_INTERVAL="5")
    try:
        put_policy(stack, policy("restored"))
        put_policy(stack, policy("recorded", on_drift="record"))
        good = {}
        for repo in ("restored/app", "recorded/app"):
            good[repo] = push(stack, tmp_path, repo.replace("/", "-"), f"{repo}:v1.0.0")
            moved = promote(stack, repository=repo, environment="develop", tag="v1.0.0")
            assert moved.status_code == 201, moved.text
        # the pass of the worker's start is over: what finds the drift below is a later one
        wait_for(lambda: finished_reconciles(stack), timeout=60)
        assert events(stack, action="drift.detected") == []
        rogue = oci.simple_image("rogue")
        layout = oci.write_layout(tmp_path / "rogue", {"img": rogue})
        for repo in good:
            direct = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.reg}/{repo}:develop")
            assert direct.returncode == 0, direct.stderr
        restored = wait_for(lambda: events(stack, repository="restored/app",
                                           action="drift.detected"), timeout=90)
        recorded = wait_for(lambda: events(stack, repository="recorded/app",
                                           action="drift.detected"), timeout=90)
        assert registry_digest(stack, "restored/app", "develop") == good["restored/app"].digest
        assert [(e["tag"], e["kind"], e["expected_digest"], e["found_digest"], e["policy"],
                 e["on_drift"], e["restored"]) for e in restored] == [
            ("develop", "environment", good["restored/app"].digest, rogue.digest, "restored",
             "restore", True)]
        # record: every pass records it again, none puts it back
        assert {(e["tag"], e["kind"], e["expected_digest"], e["found_digest"], e["policy"],
                 e["on_drift"], e["restored"]) for e in recorded} == {
            ("develop", "environment", good["recorded/app"].digest, rogue.digest, "recorded",
             "record", False)}
        assert registry_digest(stack, "recorded/app", "develop") == rogue.digest
        pointers = api(stack, "GET", "/api/v1/environments",
                       params={"repository": "recorded/app"}).json()["environments"]
        assert {e["name"]: e["digest"] for e in pointers}["develop"] == good[
            "recorded/app"].digest
    finally:
        stack.stop()


# -- 3. scans fail until a database is loaded; the import rescans what environments run ---------
def test_scans_fail_without_a_database_and_the_import_rescans_deployed_digests(tmp_path: Path):
    stack = start_stack(tmp_path)
    try:
        put_policy(stack, policy("nodb"))
        image = oci.Image(layers=fixtures.alpine_image_layers())
        push_layout(stack, tmp_path, image, "nodb/app:v1.0.0")
        assert promote(stack, repository="nodb/app", environment="develop",
                       tag="v1.0.0").status_code == 201
        assert api(stack, "GET", "/api/v1/vulndb").json()["records"] == 0
        failed = scan(stack, "nodb/app", "v1.0.0")
        assert (failed["status"], failed["error"], failed["digest"]) == (
            "failed", NO_DB, image.digest)
        tagwarden = str(Path(sys.executable).parent / "tagwarden")
        done = subprocess.run(
            [tagwarden, "vulndb", "import", str(osv_dir(tmp_path / "osv")), "--json"],
            env={**stack.env, "TAGWARDEN_URL": stack.gw_url, "TAGWARDEN_TOKEN": procs.ADMIN_TOKEN},
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["rescans"] == 1, done.stdout

        def rescanned():
            items = api(stack, "GET", "/api/v1/scans", params={"repository": "nodb/app"}
                        ).json()["items"]
            return [s for s in items if s["reason"] == "vulndb-update"
                    and s["status"] in ("succeeded", "failed")]

        [rescan] = wait_for(rescanned, timeout=60)
        assert rescan["status"] == "succeeded", rescan["error"]
        assert rescan["digest"] == image.digest
        assert sorted(map(_key, rescan["findings"])) == sorted(
            map(_key, fixtures.ALPINE_EXPECTED_FINDINGS))
    finally:
        stack.stop()


# -- 4. TAGWARDEN_VULNDB at worker start ---------------------------------------------------------
def test_the_worker_imports_tagwarden_vulndb_at_start(tmp_path: Path):
    stack = start_stack(tmp_path, TAGWARDEN_VULNDB=str(osv_dir(tmp_path / "osv")))
    try:
        put_policy(stack, policy("startdb"))
        records = len(fixtures.osv_fixture_records())
        info = wait_for(lambda: (i := api(stack, "GET", "/api/v1/vulndb").json())["records"]
                        and i, timeout=60)
        assert info["records"] == records and info["loaded_at"], info
        image = oci.Image(layers=fixtures.alpine_image_layers())
        push_layout(stack, tmp_path, image, "startdb/app:v1.0.0")
        result = scan(stack, "startdb/app", "v1.0.0")
        assert result["status"] == "succeeded", result["error"]
        assert result["vulndb"]["version"] == info["version"]
        assert sorted(map(_key, result["findings"])) == sorted(
            map(_key, fixtures.ALPINE_EXPECTED_FINDINGS))
    finally:
        stack.stop()


# -- 5. TAGWARDEN_SCANNER_MODE=external ------------------------------------------------------------
def test_external_mode_reports_only_the_external_scanners_findings(tmp_path: Path):
    vulnerability = {"id": "CVE-2099-0002", "package": "musl", "version": "1.2.4-r2",
                     "fix_version": "1.2.4-r3", "severity": "High"}
    with HarborDouble(vulnerabilities=[vulnerability], pending_polls=1,
                      refresh_after=0) as double:
        # the database is loaded too: the built-in scanner would find something if it ran
        stack = start_stack(tmp_path, TAGWARDEN_VULNDB=str(osv_dir(tmp_path / "osv")),
                            TAGWARDEN_SCANNER_URL=double.url, TAGWARDEN_SCANNER_MODE="external")
        try:
            put_policy(stack, policy("external"))
            wait_for(lambda: api(stack, "GET", "/api/v1/vulndb").json()["records"], timeout=60)
            image = oci.Image(layers=fixtures.alpine_image_layers())
            push_layout(stack, tmp_path, image, "external/app:v1.0.0")
            result = scan(stack, "external/app", "v1.0.0")
            assert result["status"] == "succeeded", result["error"]
            assert [(f["id"], f["package"], f["installed_version"], f["fixed_version"],
                     f["severity"], f.get("scanner")) for f in result["findings"]] == [
                ("CVE-2099-0002", "musl", "1.2.4-r2", "1.2.4-r3", "high", "external")]
            assert result["packages"] == 0  # no built-in inventory was taken
            assert result["summary"] == {"critical": 0, "high": 1, "medium": 0, "low": 0,
                                         "unknown": 0}
            [request] = double.seen("POST", "/api/v1/scan")
            assert request.json()["artifact"]["digest"] == image.digest
        finally:
            stack.stop()
