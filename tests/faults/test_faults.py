"""Faults on real processes: kill workers, Redis, the registry and gateway workers mid-flight."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import redis as redis_lib
import requests
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from service.config import Settings
from service.services import Services
from service.store import TIMEOUT as STORE_TIMEOUT
from service.store import key, tagmap
from service.store.events import EventStore
from service.store.inbox import GROUP, Inbox
from testkit import oci, procs
from testkit import scan_fixtures as fixtures
from tests.faults.conftest import report, start_fault_stack
from tests.integration.conftest import CI_CREDS, Stack
from tests.integration.test_webhooks import wait_for

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
    """The worker and its work-horse are SIGKILLed while the scan job is started and the scan
    record says running; RQ finds the job abandoned, retries it on a new worker (one retry
    used, a second start time), and the digest gets exactly one succeeded report."""
    stack = start_fault_stack(tmp_path, TAGWARDEN_JOB_MONITORING_INTERVAL="1",
                              TAGWARDEN_WORKER_MAINTENANCE_INTERVAL="5")
    try:
        _policy(stack)
        osv = fixtures.write_osv_dir(tmp_path / "osv", fixtures.osv_fixture_records())
        tagwarden = str(Path(sys.executable).parent / "tagwarden")
        assert subprocess.run([tagwarden, "vulndb", "import", str(osv)], env=stack.cli_env,
                              capture_output=True, timeout=60).returncode == 0
        big = oci.Image(layers=[*fixtures.alpine_image_layers(),
                                oci.random_layer(192 * 1024 * 1024, seed=7)])
        _push(stack, tmp_path, big, "faults/scan:v1.0.0")
        scan = stack.admin().post(f"{stack.gw_url}/api/v1/scans", json={
            "repository": "faults/scan", "reference": "v1.0.0"}, timeout=10).json()
        rq_redis = redis_lib.Redis(port=stack.redis.port)
        queue = Queue("tagwarden", connection=rq_redis)
        started = StartedJobRegistry(queue=queue)

        def get_scan() -> dict:
            return stack.admin().get(f"{stack.gw_url}/api/v1/scans/{scan['id']}",
                                     timeout=10).json()

        wait_for(lambda: get_scan()["status"] == "running", timeout=60, interval=0.01)
        frozen = _freeze(stack.worker)  # the worker, its work-horse and its scheduler
        at_kill = get_scan()
        job = Job.fetch(f"scan-{scan['id']}", connection=rq_redis)
        assert at_kill["status"] == "running" and at_kill["started_at"], at_kill
        assert at_kill["finished_at"] is None
        assert job.get_status() == JobStatus.STARTED
        assert job.id in started.get_job_ids(cleanup=False)
        assert job.retries_left == 3
        first_start = job.started_at
        _kill_all(frozen)  # SIGKILL mid-scan
        stack.worker.stop()  # reaps it
        stack.worker = procs.worker_process(tmp_path / "worker2", stack.env, name="worker2")

        def finished():
            body = get_scan()
            return body if body["status"] in ("succeeded", "failed") else None

        result = wait_for(finished, timeout=200, interval=0.5)
        assert result["status"] == "succeeded", result.get("error")
        assert sorted(f["id"] for f in result["findings"]) == sorted(
            f["id"] for f in fixtures.ALPINE_EXPECTED_FINDINGS)
        assert result["started_at"] > at_kill["started_at"]  # the retry's own start
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.retries_left == 2  # one retry used: the abandoned attempt
        assert job.started_at > first_start
        listed = stack.admin().get(f"{stack.gw_url}/api/v1/scans",
                                   params={"digest": big.digest}, timeout=10).json()["items"]
        assert [(s["id"], s["status"]) for s in listed] == [(scan["id"], "succeeded")]
        assert started.get_job_ids(cleanup=False) == []
        assert FailedJobRegistry(queue=queue).get_job_ids() == []
        report("worker killed mid-scan", scans=1, killed_while=at_kill["status"],
               retries_used=3 - job.retries_left, reports=len(listed), stuck_jobs=0)
    finally:
        stack.stop()


def _reconcile_here(stack: Stack) -> Services:
    """One reconciliation pass run to the end in this process (a queue of its own, which the
    stack's worker does not serve); the services it used."""
    from service.core.jobs import enqueue_reconcile
    from workers.context import services

    saved = dict(os.environ)
    os.environ.update(stack.env)
    os.environ["TAGWARDEN_QUEUE"] = f"fault-repair-{uuid.uuid4().hex}"
    try:
        services.cache_clear()
        svc = Services.build(Settings.from_env())
        enqueue_reconcile(svc.queue)
        SimpleWorker([svc.queue], connection=svc.rq_redis).work(burst=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        services.cache_clear()
    return svc


def test_redis_killed_during_a_burst_of_promotions(tmp_path: Path):
    """Promotions, each with its own Idempotency-Key, run before, during and after a Redis
    outage; Redis stays down until some of them were answered 503 store_unavailable. After the
    restart no 201 is lost and each acknowledged key replays its first answer."""
    stack = start_fault_stack(tmp_path)
    try:
        _policy(stack)
        repo = "faults/burst"
        images = [oci.simple_image(f"burst-{i}") for i in range(2)]
        for i, image in enumerate(images):
            _push(stack, tmp_path, image, f"{repo}:v1.0.{i}")
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {procs.ADMIN_TOKEN}"
        results: list[dict] = []
        lock = threading.Lock()
        warmed_up = threading.Event()
        down = threading.Event()  # set while Redis is killed

        def client(n: int) -> None:
            for i in range(25):
                body = {"repository": repo, "environment": ["develop", "staging"][n % 2],
                        "digest": images[(n + i) % 2].digest}
                key_ = f"burst-{n}-{i}-{uuid.uuid4().hex}"
                sent_down = down.is_set()
                try:
                    resp = session.post(f"{stack.gw_url}/api/v1/promotions", json=body,
                                        headers={"Idempotency-Key": key_}, timeout=15)
                    status, payload = resp.status_code, resp.json()
                except requests.RequestException as exc:
                    status, payload = 0, {"error": repr(exc)}
                with lock:
                    results.append({"key": key_, "body": body, "status": status,
                                    "payload": payload, "sent_down": sent_down,
                                    "answered_down": down.is_set()})
                    if len(results) >= 40:
                        warmed_up.set()
                time.sleep(0.15)  # the burst spans before, during and after the outage

        def refused_while_down() -> list[dict]:
            with lock:
                return [r for r in results if r["sent_down"] and r["status"] == 503]

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        assert warmed_up.wait(60), "the burst did not start"
        stack.redis.kill()
        down.set()
        t0 = time.monotonic()
        # Answered within the store's own deadline (a client timeout equal to the gateway's
        # Redis socket timeout): no retry loop, no hang behind the dead connection.
        probe = requests.get(f"{stack.gw_url}/api/v1/policies", timeout=STORE_TIMEOUT,
                             headers={"Authorization": f"Bearer {procs.ADMIN_TOKEN}"})
        answered_in = time.monotonic() - t0
        assert probe.status_code == 503, probe.text
        assert probe.json()["code"] == "store_unavailable"
        ready = requests.get(f"{stack.gw_url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] == "down"
        wait_for(lambda: len(refused_while_down()) >= 8, timeout=30, interval=0.05)
        down.clear()
        stack.redis.start()
        back = time.monotonic()
        wait_for(lambda: requests.get(f"{stack.gw_url}/readyz", timeout=5).status_code == 200,
                 timeout=10, interval=0.2)
        recovered_in = time.monotonic() - back
        for t in threads:
            t.join(120)
        svc = _reconcile_here(stack)  # finishes or drops what the crash interrupted
        statuses = [r["status"] for r in results]
        assert len(results) == 8 * 25
        assert set(statuses) <= {201, 503, 409}, statuses
        assert {r["payload"]["code"] for r in results if r["status"] == 503} == {
            "store_unavailable"}
        refused = refused_while_down()
        assert len(refused) >= 8  # the outage overlapped the burst
        acknowledged = [r for r in results if r["status"] == 201]
        assert len(acknowledged) > 100  # most of the burst ran before or after the outage
        recorded = {r["id"] for env in ("develop", "staging") for r in _history(stack, repo, env)}
        lost = [r["payload"]["id"] for r in acknowledged if r["payload"]["id"] not in recorded]
        assert lost == []
        for r in acknowledged:  # the same key and body: the first answer, nothing promoted again
            replay = session.post(f"{stack.gw_url}/api/v1/promotions", json=r["body"],
                                  headers={"Idempotency-Key": r["key"]}, timeout=15)
            assert (replay.status_code, replay.json()) == (201, r["payload"]), r["key"]
            assert replay.headers.get("Idempotent-Replayed") == "true"
        assert {r["id"] for env in ("develop", "staging")
                for r in _history(stack, repo, env)} == recorded
        for env in ("develop", "staging"):
            pointer = _pointer(stack, repo, env)
            assert _registry_tag(stack, repo, env) == pointer
            assert _history(stack, repo, env)[0]["digest"] == pointer
        assert svc.promotions.pending_intents() == []
        in_flight = [r for r in results if not r["sent_down"] and r["answered_down"]]
        report("redis killed mid-burst", sent=len(results), acknowledged=len(acknowledged),
               refused_503=statuses.count(503), sent_while_down_503=len(refused),
               in_flight_at_kill=len(in_flight), conflicts_409=statuses.count(409),
               recorded=len(recorded), lost=len(lost), replayed=len(acknowledged),
               down_answer_s=round(answered_in, 3), recovered_s=round(recovered_in, 2))
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
        stack.registry.start()
        procs.wait_http(f"{stack.reg_url}/v2/")
        assert _history(stack, repo, "develop") == []  # nothing was recorded while it was down
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


def _freeze(proc: procs.Proc) -> list[psutil.Process]:
    """SIGSTOP a process and every descendant (an RQ work-horse has a process group of its
    own, so signalling the worker's group does not reach it)."""
    frozen = procs.tree(proc.pid)
    for p in frozen:
        p.send_signal(signal.SIGSTOP)
    return frozen


def _kill_all(frozen: list[psutil.Process]) -> None:
    """SIGKILL processes (frozen by `_freeze`) and wait until they are gone."""
    for p in frozen:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(frozen, timeout=10)


HELD_MS = 50


def _held_before(client, inbox: Inbox, frozen_at: float) -> float:  # noqa: ANN001
    """How long (ms) before `frozen_at` the worker had been holding its claimed entries: a
    worker that acks what it reads before processing it holds them for a round trip only."""
    entries = client.xpending_range(inbox.stream, GROUP, "-", "+", 1000)
    since_freeze = (time.monotonic() - frozen_at) * 1000
    return min(e["time_since_delivered"] for e in entries) - since_freeze if entries else 0


def _storm_manifest(i: int) -> bytes:
    """A unique empty index (needs no blobs) for the storm's push `i`."""
    return json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [],
                       "annotations": {"storm": str(i)}}).encode()


def _seed_storm_tags(stack: Stack, count: int) -> None:
    """Write the storm's tags straight to the registry (its events are checked against it),
    let the registry's own notifications drain, then make the gateway forget the tags so
    only the storm's events can teach them again."""
    def put(i: int) -> int:
        return requests.put(f"{stack.reg_url}/v2/storm/app{i % 50}/manifests/build-{i}",
                            data=_storm_manifest(i), timeout=30,
                            headers={"Content-Type": oci.OCI_INDEX}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(put, range(count))) == {201}
    client = stack.redis_client()
    inbox = Inbox(client)

    def quiet() -> bool:
        return client.xpending(inbox.stream, GROUP)["pending"] == 0 and inbox.backlog() == 0

    settled = [0]

    def learned_all() -> bool:  # the registry's notifications of the seeding, processed
        settled[0] = sum(client.hlen(tagmap.map_key(f"storm/app{j}")) for j in range(50))
        return settled[0] == count and quiet()

    wait_for(learned_all, timeout=180, interval=0.5)
    client.delete(*[tagmap.map_key(f"storm/app{j}") for j in range(50)],
                  *[tagmap.complete_key(f"storm/app{j}") for j in range(50)])


def _storm_events(rng: random.Random) -> tuple[list[dict], list[dict], list[dict]]:
    """(manifest pushes, deletes, pulls): the first two go through the inbox to a worker.
    The pushes name tags the registry really holds (seeded first); the deletes name what it
    does not hold, so the registry bears both out."""
    def event(action: str, i: int, **target: str) -> dict:
        return {"id": str(uuid.UUID(int=rng.getrandbits(128))), "action": action,
                "timestamp": STORM_TIME,
                "target": {"repository": f"storm/app{i % 50}", **target}}

    pushes = [event("push", i, mediaType=oci.OCI_INDEX, digest=oci.sha256_digest(
        _storm_manifest(i)), tag=f"build-{i}") for i in range(STORM_PUSHES)]
    deletes = [event("delete", i, digest="sha256:" + f"{10**6 + i:064x}",
                     **({"tag": f"gone-{i}"} if i % 2 else {})) for i in range(1500)]
    pulls = [event("pull", i, mediaType=oci.OCI_MANIFEST, digest="sha256:" + f"{i:064x}")
             for i in range(3000)]
    return pushes, deletes, pulls


STORM_PUSHES = 3000
STORM_TIME = "2026-11-28T00:00:00Z"


def test_webhook_storm_records_each_valid_event_once(tmp_path: Path):
    """Manifest pushes and deletes go through the inbox (a consumer group) to a worker, which
    is SIGKILLed while it holds claimed entries; a new worker claims them (after the inbox's
    60 s idle time) and every valid event ends up recorded exactly once."""
    stack = start_fault_stack(tmp_path, TAGWARDEN_JOB_MONITORING_INTERVAL="1",
                              TAGWARDEN_WORKER_MAINTENANCE_INTERVAL="5")
    try:
        _policy(stack)  # scan_on_push off: the storm is about events, not scans
        _seed_storm_tags(stack, STORM_PUSHES)
        seeded = {json.loads(f["d"])["id"]
                  for _, f in stack.redis_client().xrange(key("events"))}
        rng = random.Random(42)
        pushes, deletes, pulls = _storm_events(rng)
        unique = pushes + deletes + pulls
        rng.shuffle(unique)
        duplicates = [rng.choice(unique) for _ in range(2000)]
        malformed = [{"id": f"bad-{i}", "action": "explode"} for i in range(500)]
        envelopes = unique + duplicates + malformed
        rng.shuffle(envelopes)
        url = f"{stack.gw_url}/api/v1/webhooks/registry"
        headers = {"Authorization": f"Bearer {procs.WEBHOOK_TOKEN}",
                   "Content-Type": "application/vnd.docker.distribution.events.v1+json"}
        client = stack.redis_client()
        inbox = Inbox(client)
        before = stack.gateway.rss()
        local = threading.local()
        sent = [0]

        def send(event: dict) -> int:
            if not hasattr(local, "s"):
                local.s = requests.Session()
            status = local.s.post(url, data=json.dumps({"events": [event]}), headers=headers,
                                  timeout=30).status_code
            sent[0] += 1
            return status

        def claimed() -> dict | None:
            pending = client.xpending(inbox.stream, GROUP)
            return pending if pending["pending"] else None

        with procs.PeakRss(stack.gateway.pid) as peak, ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(send, e) for e in envelopes]
            wait_for(lambda: sent[0] >= len(envelopes) // 4 and claimed(), timeout=120,
                     interval=0.01)
            for _ in range(500):  # freeze the worker (and its work-horse) mid-batch
                frozen, frozen_at = _freeze(stack.worker), time.monotonic()
                at_kill = claimed()
                if at_kill and _held_before(client, inbox, frozen_at) >= HELD_MS:
                    break
                for p in frozen:  # between batches, or a batch just read: let it go on
                    p.send_signal(signal.SIGCONT)
                at_kill = None
                time.sleep(0.01)
            assert at_kill, "the worker was never caught working on claimed inbox entries"
            killed_at = sent[0]
            pending_ids = [e["message_id"] for e in client.xpending_range(
                inbox.stream, GROUP, "-", "+", at_kill["pending"])]
            _kill_all(frozen)
            stack.worker.stop()  # reaps it
            stack.worker = procs.worker_process(tmp_path / "worker2", stack.env, name="worker2")
            statuses = [f.result() for f in futures]
        assert statuses.count(200) == len(envelopes)
        assert killed_at < len(envelopes)  # the storm went on after the kill
        horses = {f"{socket.gethostname()}-{p.pid}" for p in frozen}
        assert [c["name"] for c in at_kill["consumers"]] and all(
            c["name"] in horses for c in at_kill["consumers"])  # held by the killed worker
        claimed_events = {json.loads(f["d"])["id"] for _, f in (
            client.xrange(inbox.stream, i, i)[0] for i in pending_ids)}
        assert len(claimed_events) == len(pending_ids) > 0

        def drained() -> bool:
            return (client.xpending(inbox.stream, GROUP)["pending"] == 0
                    and inbox.backlog() == 0)

        wait_for(drained, timeout=150, interval=0.5)  # the new worker claimed and processed
        # the storm's own events (the registry's real ones, e.g. the pulls its HEADs of the
        # verification emit, carry the time they happened)
        recorded = Counter(e["id"] for e in (json.loads(f["d"]) for _, f in client.xrange(
            key("events"))) if e["id"] not in seeded and e.get("timestamp") == STORM_TIME)
        assert {i: n for i, n in recorded.items() if n != 1} == {}  # each recorded once
        assert set(recorded) == {e["id"] for e in unique}
        assert claimed_events <= set(recorded)
        assert all(c["pending"] == 0 for c in client.xinfo_consumers(inbox.stream, GROUP))
        learned = {(e["target"]["repository"], e["target"]["tag"]): e["target"]["digest"]
                   for e in pushes}
        assert {k: client.hget(tagmap.map_key(k[0]), k[1]) for k in learned} == learned
        events = EventStore(client)
        assert events.counters().get("webhook.malformed") == len(malformed)
        assert "webhook.failed" not in events.counters()
        growth = peak.peak - before
        assert growth < 64 * 1024 * 1024, growth
        report("webhook storm", sent=len(envelopes), acknowledged=statuses.count(200),
               via_inbox=len(pushes) + len(deletes), killed_after=killed_at,
               claimed_at_kill=len(pending_ids), recorded=sum(recorded.values()),
               duplicates_dropped=len(duplicates), malformed_counted=len(malformed), lost=0,
               rss_growth_mib=round(growth / 2**20, 1))
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _bounded(request):
    """Every scenario is bounded in time (pytest-timeout)."""
    request.node.add_marker(pytest.mark.timeout(300))
