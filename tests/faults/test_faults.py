"""Faults on real processes: kill workers, Redis, the registry and gateway workers mid-flight."""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from rq import Queue
from rq.registry import StartedJobRegistry

from service.store import TIMEOUT as STORE_TIMEOUT
from service.store.events import EventStore
from tests.faults.conftest import report, start_fault_stack
from tests.helpers import oci, procs
from tests.integration.conftest import CI_CREDS, Stack
from tests.integration.test_webhooks import wait_for
from tests.unit.scanner import fixtures

# the gateway's deadline for one call to the registry in the registry-down scenario (seconds)
REGISTRY_TIMEOUT = 5
NO_GATES = {"name": "faults", "repositories": ["*"], "scan_on_push": False,
            "promotion": {"develop": {}, "staging": {}, "production": {}}}


def _policy(stack: Stack, policy: dict = NO_GATES) -> None:
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/{policy['name']}", json=policy,
                             timeout=10)
    assert resp.status_code == 200, resp.text


def _push(stack: Stack, tmp_path: Path, image: oci.Image, dest: str) -> None:
    layout = oci.write_layout(tmp_path / uuid.uuid4().hex, {"img": image})
    done = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{dest}",
                           creds=CI_CREDS, extra=["--preserve-digests"])
    assert done.returncode == 0, done.stderr


def _registry_tag(stack: Stack, repo: str, tag: str) -> str | None:
    resp = requests.head(f"{stack.reg_url}/v2/{repo}/manifests/{tag}", timeout=10, headers={
        "Accept": f"{oci.OCI_MANIFEST}, {oci.OCI_INDEX}"})
    return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None


def _history(stack: Stack, repo: str, env: str) -> list[dict]:
    items, cursor = [], None
    while True:
        params = {"repository": repo, "environment": env, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = stack.admin().get(f"{stack.gw_url}/api/v1/promotions", params=params,
                                 timeout=10).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


def _pointer(stack: Stack, repo: str, env: str) -> str | None:
    envs = stack.admin().get(f"{stack.gw_url}/api/v1/environments",
                             params={"repository": repo}, timeout=10).json()
    return {e["name"]: e["digest"] for e in envs["environments"]}[env]


def test_worker_killed_mid_scan_is_retried_and_completes_once(tmp_path: Path):
    stack = start_fault_stack(tmp_path, TAGWARDEN_JOB_MONITORING_INTERVAL="1",
                              TAGWARDEN_WORKER_MAINTENANCE_INTERVAL="5")
    try:
        _policy(stack)
        osv = fixtures.write_osv_dir(tmp_path / "osv", fixtures.osv_fixture_records())
        import subprocess

        tagwarden = str(Path(sys.executable).parent / "tagwarden")
        assert subprocess.run([tagwarden, "vulndb", "import", str(osv)], env=stack.cli_env,
                              capture_output=True, timeout=60).returncode == 0
        big = oci.Image(layers=[*fixtures.alpine_image_layers(),
                                oci.random_layer(192 * 1024 * 1024, seed=7)])
        _push(stack, tmp_path, big, "faults/scan:v1.0.0")
        scan = stack.admin().post(f"{stack.gw_url}/api/v1/scans", json={
            "repository": "faults/scan", "reference": "v1.0.0"}, timeout=10).json()

        def running():
            body = stack.admin().get(f"{stack.gw_url}/api/v1/scans/{scan['id']}",
                                     timeout=10).json()
            return body["status"] == "running"

        wait_for(running, timeout=60, interval=0.01)
        stack.worker.kill()  # SIGKILL of the worker and its work-horse, mid-scan
        stack.worker = procs.worker_process(tmp_path / "worker2", stack.env, name="worker2")

        def finished():
            body = stack.admin().get(f"{stack.gw_url}/api/v1/scans/{scan['id']}",
                                     timeout=10).json()
            return body if body["status"] in ("succeeded", "failed") else None

        result = wait_for(finished, timeout=180, interval=0.5)
        assert result["status"] == "succeeded", result.get("error")
        assert sorted(f["id"] for f in result["findings"]) == sorted(
            f["id"] for f in fixtures.ALPINE_EXPECTED_FINDINGS)
        listed = stack.admin().get(f"{stack.gw_url}/api/v1/scans",
                                   params={"digest": big.digest}, timeout=10).json()["items"]
        assert [s["id"] for s in listed] == [scan["id"]]  # exactly one report per digest
        import redis as redis_lib

        rq_redis = redis_lib.Redis(port=stack.redis.port)
        started = StartedJobRegistry(queue=Queue("tagwarden", connection=rq_redis))
        wait_for(lambda: started.count == 0, timeout=30)
        report("worker killed mid-scan", scans=1, retried=1, reports=len(listed), stuck_jobs=0)
    finally:
        stack.stop()


def test_redis_killed_during_a_burst_of_promotions(tmp_path: Path):
    stack = start_fault_stack(tmp_path)
    try:
        _policy(stack)
        repo = "faults/burst"
        images = [oci.simple_image(f"burst-{i}") for i in range(2)]
        for i, image in enumerate(images):
            _push(stack, tmp_path, image, f"{repo}:v1.0.{i}")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {procs.ADMIN_TOKEN}"
        results: list[tuple[int, dict | None]] = []
        lock = threading.Lock()
        started = threading.Event()

        def client(n: int) -> None:
            for i in range(25):
                body = {"repository": repo, "environment": ["develop", "staging"][n % 2],
                        "digest": images[(n + i) % 2].digest}
                try:
                    resp = session.post(f"{stack.gw_url}/api/v1/promotions", json=body,
                                        timeout=15)
                    entry = (resp.status_code, resp.json() if resp.status_code == 201 else None)
                except requests.RequestException:
                    entry = (0, None)
                with lock:
                    results.append(entry)
                    if len(results) >= 40:
                        started.set()
                time.sleep(0.15)  # the burst spans before, during and after the outage

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        started.wait(60)
        stack.redis.kill()
        t0 = time.monotonic()
        # Answered within the store's own deadline (a client timeout equal to the gateway's
        # Redis socket timeout): no retry loop, no hang behind the dead connection.
        down = requests.get(f"{stack.gw_url}/api/v1/policies", timeout=STORE_TIMEOUT,
                            headers={"Authorization": f"Bearer {procs.ADMIN_TOKEN}"})
        answered_in = time.monotonic() - t0
        assert down.status_code == 503, down.text
        assert down.json()["code"] == "store_unavailable"
        ready = requests.get(f"{stack.gw_url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "down"
        time.sleep(1.0)
        stack.redis.start()
        back = time.monotonic()
        wait_for(lambda: requests.get(f"{stack.gw_url}/readyz", timeout=5).status_code == 200,
                 timeout=10, interval=0.2)
        recovered_in = time.monotonic() - back
        for t in threads:
            t.join(120)
        # reconciliation finishes or drops what the crash interrupted
        from rq import SimpleWorker

        from service.config import Settings
        from service.jobs import enqueue_reconcile
        from service.services import Services
        from workers.context import services

        os.environ.update(stack.env)
        os.environ["TAGWARDEN_QUEUE"] = "fault-repair"  # run here, not by the stack's worker
        try:
            services.cache_clear()
            svc = Services.build(Settings.from_env())
            enqueue_reconcile(svc.queue)
            SimpleWorker([svc.queue], connection=svc.rq_redis).work(burst=True)
        finally:
            for name in stack.env:
                if name.startswith("TAGWARDEN_"):
                    os.environ.pop(name, None)
            services.cache_clear()
        acknowledged = [body for status, body in results if status == 201]
        statuses = [status for status, _ in results]
        assert set(statuses) <= {201, 503, 409}, statuses
        assert statuses.count(201) > 100  # most of the burst ran before or after the outage
        recorded = {r["id"] for env in ("develop", "staging") for r in _history(stack, repo, env)}
        lost = [b["id"] for b in acknowledged if b["id"] not in recorded]
        assert lost == []
        for env in ("develop", "staging"):
            pointer = _pointer(stack, repo, env)
            assert _registry_tag(stack, repo, env) == pointer
            assert _history(stack, repo, env)[0]["digest"] == pointer
        assert svc.promotions.pending_intents() == []
        report("redis killed mid-burst", sent=len(results), acknowledged=len(acknowledged),
               refused_503=statuses.count(503), conflicts_409=statuses.count(409),
               recorded=len(recorded), lost=len(lost), down_answer_s=round(answered_in, 3),
               recovered_s=round(recovered_in, 2))
    finally:
        stack.stop()


def test_registry_down_fails_fast_and_recovers(tmp_path: Path):
    stack = start_fault_stack(tmp_path, TAGWARDEN_REGISTRY_TIMEOUT=str(REGISTRY_TIMEOUT))
    try:
        _policy(stack)
        repo = "faults/regdown"
        image = oci.simple_image("regdown")
        _push(stack, tmp_path, image, f"{repo}:v1.0.0")
        stack.registry.kill()
        body = {"repository": repo, "environment": "develop", "tag": "v1.0.0"}

        def promote() -> tuple[int, float, dict]:
            t0 = time.monotonic()
            resp = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body,
                                      timeout=REGISTRY_TIMEOUT)
            return resp.status_code, time.monotonic() - t0, resp.json()

        def pull() -> tuple[int, float, dict]:
            t0 = time.monotonic()
            resp = requests.get(f"{stack.gw_url}/v2/{repo}/manifests/v1.0.0",
                                timeout=REGISTRY_TIMEOUT, auth=("ci", procs.ADMIN_TOKEN))
            return resp.status_code, time.monotonic() - t0, resp.json()

        with ThreadPoolExecutor(max_workers=40) as pool:
            futures = [pool.submit(promote if i % 2 else pull) for i in range(80)]
            health = requests.get(f"{stack.gw_url}/healthz", timeout=2)
            answers = [f.result() for f in futures]
        assert health.status_code == 200
        # Every call was answered within the configured registry timeout (the client's own
        # timeout is that setting: a hang raises ReadTimeout in f.result() above).
        for status, took, payload in answers:
            assert status in (502, 503), (status, took, payload)
            if "errors" in payload:
                assert payload["errors"][0]["code"] == "UNAVAILABLE"
            else:
                assert payload["code"] == "registry_unavailable"
        layout = oci.write_layout(tmp_path / "p", {"img": oci.simple_image("regdown-2")})
        pushed = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{repo}:v2.0.0",
                                 creds=CI_CREDS, timeout=60)
        assert pushed.returncode != 0
        assert _history(stack, repo, "develop") == []
        stack.registry.start()
        procs.wait_http(f"{stack.reg_url}/v2/")
        status, _, record = promote()
        assert status == 201 and record["digest"] == image.digest
        assert [r["id"] for r in _history(stack, repo, "develop")] == [record["id"]]
        report("registry down", requests=len(answers), slowest_s=round(max(
            a[1] for a in answers), 3), history_records_while_down=0, recovered=True)
    finally:
        stack.stop()


def test_gateway_worker_killed_mid_promotion_is_repaired_once(tmp_path: Path):
    stack = start_fault_stack(tmp_path, TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE="3")
    try:
        _policy(stack)
        repo = "faults/killed"
        one, two = oci.simple_image("killed-1"), oci.simple_image("killed-2")
        _push(stack, tmp_path, one, f"{repo}:v1.0.0")
        _push(stack, tmp_path, two, f"{repo}:v2.0.0")
        key = {"Idempotency-Key": f"ci-{uuid.uuid4().hex}"}
        body = {"repository": repo, "environment": "develop", "tag": "v2.0.0"}
        outcome: list = []

        def first_attempt() -> None:
            try:
                outcome.append(stack.admin().post(f"{stack.gw_url}/api/v1/promotions",
                                                  json=body, headers=key, timeout=30))
            except requests.RequestException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=first_attempt)
        thread.start()
        wait_for(lambda: _registry_tag(stack, repo, "develop") == two.digest, timeout=20,
                 interval=0.05)
        for child in psutil.Process(stack.gateway.pid).children():
            child.send_signal(signal.SIGKILL)  # the gunicorn worker dies between registry/Redis
        thread.join(30)
        assert outcome and (isinstance(outcome[0], Exception) or outcome[0].status_code >= 500)
        deadline = time.monotonic() + 60
        retry = None
        while time.monotonic() < deadline:  # the CI client retries with its key
            try:
                retry = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body,
                                           headers=key, timeout=30)
                if retry.status_code == 201:
                    break
            except requests.RequestException:
                pass
            time.sleep(2)
        assert retry is not None and retry.status_code == 201, retry and retry.text
        history = _history(stack, repo, "develop")
        assert [r["digest"] for r in history] == [two.digest]  # one record, no duplicate
        assert history[0]["id"] == retry.json()["id"]
        again = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body, headers=key,
                                   timeout=30)
        assert again.json()["id"] == history[0]["id"]
        assert _pointer(stack, repo, "develop") == _registry_tag(stack, repo, "develop")
        report("gateway killed mid-promotion", history_records=len(history), duplicates=0,
               repaired=True)
    finally:
        stack.stop()


def test_webhook_storm_records_each_valid_event_once(tmp_path: Path):
    stack = start_fault_stack(tmp_path)
    try:
        rng = random.Random(42)
        unique = [{"id": str(uuid.UUID(int=rng.getrandbits(128))), "action": "pull",
                   "timestamp": "2026-11-28T00:00:00Z",
                   "target": {"repository": f"storm/app{i % 50}", "mediaType": oci.OCI_MANIFEST,
                              "digest": "sha256:" + f"{i:064x}"}} for i in range(7500)]
        duplicates = [rng.choice(unique) for _ in range(2000)]
        malformed = [{"id": f"bad-{i}", "action": "explode"} for i in range(500)]
        envelopes = unique + duplicates + malformed
        rng.shuffle(envelopes)
        url = f"{stack.gw_url}/api/v1/webhooks/registry"
        headers = {"Authorization": f"Bearer {procs.WEBHOOK_TOKEN}",
                   "Content-Type": "application/vnd.docker.distribution.events.v1+json"}
        before = stack.gateway.rss()
        local = threading.local()

        def send(event: dict) -> int:
            if not hasattr(local, "s"):
                local.s = requests.Session()
            return local.s.post(url, data=json.dumps({"events": [event]}), headers=headers,
                                timeout=30).status_code

        with procs.PeakRss(stack.gateway.pid) as peak, ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(send, envelopes))
        assert statuses.count(200) == len(envelopes)
        client = stack.redis_client()
        events = EventStore(client)

        def all_recorded():
            return client.xlen("tw:events") >= len(unique)

        wait_for(all_recorded, timeout=120, interval=0.5)
        time.sleep(1)
        recorded_ids = [json.loads(f["d"])["id"] for _, f in client.xrange("tw:events")]
        assert len(recorded_ids) == len(set(recorded_ids)) == len(unique)
        assert set(recorded_ids) == {e["id"] for e in unique}
        assert events.counters().get("webhook.malformed") == len(malformed)
        growth = peak.peak - before
        assert growth < 64 * 1024 * 1024, growth
        report("webhook storm", sent=len(envelopes), acknowledged=statuses.count(200),
               recorded=len(recorded_ids), duplicates_dropped=len(duplicates),
               malformed_counted=len(malformed), lost=0, rss_growth_mib=round(growth / 2**20, 1))
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _bounded(request):
    """Every scenario is bounded in time (pytest-timeout)."""
    request.node.add_marker(pytest.mark.timeout(300))
