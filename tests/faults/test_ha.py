"""Availability faults on real processes: pulls through a Redis outage, a Sentinel failover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
import requests

from service.store.tokens import ROSTER_REFRESH
from testkit import oci, procs
from tests.faults.conftest import report, start_fault_stack
from tests.faults.test_faults import NO_GATES, _history, _pointer, _policy, _push, _registry_tag
from tests.integration.conftest import TEST_ENV, Stack
from tests.integration.test_webhooks import Receiver, wait_for

# the gateway's deadline for one Redis command (TAGWARDEN_REDIS_TIMEOUT) in these scenarios
REDIS_TIMEOUT = 0.5
# a write answers within one Redis deadline (then the breaker answers at once) plus as much
# again for HTTP: the client gives up after this
WRITE_DEADLINE = 2 * REDIS_TIMEOUT
# how long Redis stays away (seconds; TAGWARDEN_FAULT_OUTAGE shortens it for a quick run):
# longer than the token cache's refresh, so pulls are served by the stale cache alone
OUTAGE = float(os.environ.get("TAGWARDEN_FAULT_OUTAGE", "60"))
# writes may be refused this long after the primary dies: Sentinel's down-after (4 s), the
# election, the old primary's return as a replica (WAIT needs one), with margin
FAILOVER_DEADLINE = 15.0
ACCEPT = f"{oci.OCI_MANIFEST}, {oci.OCI_INDEX}"


def _token(stack: Stack, role: str) -> tuple[str, str]:
    """(id, secret) of a new stored token."""
    resp = stack.admin().post(f"{stack.gw_url}/api/v1/tokens", timeout=10, json={
        "name": f"ha-{role}-{uuid.uuid4().hex[:6]}", "role": role})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], resp.json()["token"]


def _pull(gw_url: str, secret: str, repo: str, tag: str) -> list[tuple[str, int]]:
    """One pull as a client does it, each request on a new connection (any gateway
    process may answer): ping, manifest GET and HEAD, every blob, tag list, catalog."""
    auth = ("puller", secret)
    out = [("ping", requests.get(f"{gw_url}/v2/", auth=auth, timeout=10).status_code)]
    manifest = requests.get(f"{gw_url}/v2/{repo}/manifests/{tag}", auth=auth, timeout=10,
                            headers={"Accept": ACCEPT})
    out.append(("manifest", manifest.status_code))
    out.append(("manifest HEAD", requests.head(f"{gw_url}/v2/{repo}/manifests/{tag}", auth=auth,
                                               timeout=10, headers={"Accept": ACCEPT}
                                               ).status_code))
    if manifest.status_code == 200:
        body = manifest.json()
        for blob in [body["config"], *body["layers"]]:
            got = requests.get(f"{gw_url}/v2/{repo}/blobs/{blob['digest']}", auth=auth,
                               timeout=10)
            out.append(("blob", got.status_code if oci.sha256_digest(got.content) == blob["digest"]
                        else -got.status_code))
    out.append(("tags", requests.get(f"{gw_url}/v2/{repo}/tags/list", auth=auth,
                                     timeout=10).status_code))
    out.append(("catalog", requests.get(f"{gw_url}/v2/_catalog", auth=auth,
                                        timeout=10).status_code))
    return out


def _writes(gw_url: str, ci: str, admin: str, repo: str, manifest: bytes) -> list[tuple[str, int]]:
    """Every kind of write, each with the client giving up after WRITE_DEADLINE (0 then)."""
    calls = [
        ("blob upload", "POST", f"/v2/{repo}/blobs/uploads/", ("ci", ci), {}, None),
        ("manifest push", "PUT", f"/v2/{repo}/manifests/v9.9.9", ("ci", ci),
         {"Content-Type": oci.OCI_MANIFEST}, manifest),
        ("manifest delete", "DELETE", f"/v2/{repo}/manifests/{oci.sha256_digest(manifest)}",
         ("admin", admin), {}, None),
        ("promotion", "POST", "/api/v1/promotions", None, {"Authorization": f"Bearer {ci}"},
         json.dumps({"repository": repo, "environment": "develop", "tag": "v1.0.0"})),
        ("token", "POST", "/api/v1/tokens", None, {"Authorization": f"Bearer {admin}"},
         json.dumps({"name": "during-outage", "role": "reader"})),
    ]
    out = []
    for name, method, path, auth, headers, body in calls:
        if body is not None and "Content-Type" not in headers:
            headers = {**headers, "Content-Type": "application/json"}
        try:
            status = requests.request(method, gw_url + path, auth=auth, headers=headers,
                                      data=body, timeout=WRITE_DEADLINE).status_code
        except requests.RequestException:
            status = 0
        out.append((name, status))
    return out


def _outage(stack: Stack, tokens: dict[str, str], repo: str, manifest: bytes,
            seconds: float) -> tuple[list[tuple[str, str, int]], list[tuple[str, int]]]:
    """Pull with every token and try every write, in turn, for `seconds`."""
    pulls, writes = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for role, secret in tokens.items():
            pulls += [(role, what, status)
                      for what, status in _pull(stack.gw_url, secret, repo, "v1.0.0")]
        writes += _writes(stack.gw_url, tokens["ci"], tokens["admin"], repo, manifest)
    return pulls, writes


def _normal(stack: Stack, tokens: dict[str, str], repo: str, gateway_pid: int) -> None:
    """After the outage, without a restart: ready, writes work, revocation is immediate."""
    wait_for(lambda: requests.get(f"{stack.gw_url}/readyz", timeout=5).status_code == 200,
             timeout=10, interval=0.2)
    assert stack.gateway.pid == gateway_pid and stack.gateway.proc.poll() is None
    promoted = requests.post(f"{stack.gw_url}/api/v1/promotions", timeout=10, json={
        "repository": repo, "environment": "develop", "tag": "v1.0.0"},
        headers={"Authorization": f"Bearer {tokens['ci']}"})
    assert promoted.status_code == 201, promoted.text
    spare_id, spare = _token(stack, "reader")
    assert all(s == 200 for _, s in _pull(stack.gw_url, spare, repo, "v1.0.0"))
    assert stack.admin().delete(f"{stack.gw_url}/api/v1/tokens/{spare_id}",
                                timeout=10).status_code == 204
    revoked = requests.get(f"{stack.gw_url}/v2/", auth=("puller", spare), timeout=10)
    assert revoked.status_code == 401


@pytest.mark.timeout(int(2 * OUTAGE + 240))
def test_pulls_survive_a_redis_outage_and_writes_fail_fast(tmp_path: Path):
    stack = start_fault_stack(tmp_path, TAGWARDEN_REDIS_TIMEOUT=str(REDIS_TIMEOUT))
    try:
        _policy(stack)
        repo = "ha/pulls"
        image = oci.simple_image("outage")
        _push(stack, tmp_path, image, f"{repo}:v1.0.0")
        manifest = requests.get(f"{stack.gw_url}/v2/{repo}/manifests/v1.0.0",
                                auth=("ci", procs.ADMIN_TOKEN), timeout=10,
                                headers={"Accept": ACCEPT}).content
        tokens = {role: _token(stack, role)[1] for role in ("reader", "ci", "admin")}
        # before: every gateway process learns every token (pulls, then the cache refresh)
        warm_until = time.monotonic() + ROSTER_REFRESH + 2
        while time.monotonic() < warm_until:
            for secret in tokens.values():
                assert all(s == 200 for _, s in _pull(stack.gw_url, secret, repo, "v1.0.0"))
        gateway_pid = stack.gateway.pid
        figures = {}
        for mode in ("SIGSTOP", "stopped"):
            if mode == "SIGSTOP":
                os.kill(stack.redis.pid, signal.SIGSTOP)
            else:
                stack.redis.stop()
            try:
                pulls, writes = _outage(stack, tokens, repo, manifest, OUTAGE)
            finally:
                if mode == "SIGSTOP":
                    os.kill(stack.redis.pid, signal.SIGCONT)
                else:
                    stack.redis.start()
            failed_pulls = [p for p in pulls if p[2] != 200]
            assert failed_pulls == [], failed_pulls[:10]
            assert {status for _, status in writes} == {503}, [w for w in writes
                                                              if w[1] != 503][:10]
            _normal(stack, tokens, repo, gateway_pid)
            figures[mode] = (len(pulls), len(writes))
        report("redis outage (SIGSTOP, then stopped)", seconds_each=OUTAGE,
               pull_requests=sum(p for p, _ in figures.values()), pull_failures=0,
               writes=sum(w for _, w in figures.values()), writes_not_503_within_1s=0,
               restarts=0)
    finally:
        stack.stop()


def _ha_stack(workdir: Path) -> tuple[Stack, procs.Proc, list[procs.Proc]]:
    """The `make run-ha` topology on free ports (Redis fsyncing every write), a registry, a
    gateway and a worker that find Redis through the sentinels and need one replica's
    acknowledgement for a promotion."""
    primary, replica, sentinels = procs.redis_ha(workdir / "redis", fsync="always")
    gw_port = procs.free_port()
    registry = procs.registry_server(workdir / "registry",
                                     f"http://127.0.0.1:{gw_port}/api/v1/webhooks/registry")
    env = procs.gateway_env(primary.port, registry.port, **TEST_ENV,
                            TAGWARDEN_REDIS_SENTINELS=",".join(
                                f"127.0.0.1:{s.port}" for s in sentinels),
                            TAGWARDEN_REDIS_MIN_REPLICAS="1",
                            # a scheduler that died with the old primary while its worker
                            # lived on is restarted by the worker's next maintenance
                            TAGWARDEN_WORKER_MAINTENANCE_INTERVAL="5")
    gateway = procs.gateway_server(workdir / "gateway", env, port=gw_port)
    stack = Stack(primary, registry, gateway, workdir, env)
    stack.worker = procs.worker_process(workdir / "worker", env)
    # acknowledged writes need the replica: it has synced before the scenario starts
    wait_for(lambda: redis.Redis(port=replica.port, decode_responses=True).info(
        "replication").get("master_link_status") == "up", timeout=30, interval=0.2)
    return stack, replica, sentinels


def _master(sentinels: list[procs.Proc]) -> int | None:
    """The primary's port as the first sentinel that answers sees it."""
    for sentinel in sentinels:
        try:
            found = redis.Redis(port=sentinel.port, socket_timeout=1).execute_command(
                "SENTINEL", "get-master-addr-by-name", "tagwarden")
            return int(found[1])
        except (redis.RedisError, TypeError):
            continue
    return None


def test_primary_killed_during_promotions_fails_over(tmp_path: Path):
    stack, replica, sentinels = _ha_stack(tmp_path)
    try:
        _policy(stack)
        repo = "ha/failover"
        images = [oci.simple_image(f"failover-{i}") for i in range(2)]
        for i, image in enumerate(images):
            _push(stack, tmp_path, image, f"{repo}:v1.0.{i}")
        reader = _token(stack, "reader")[1]
        stop_pulls = threading.Event()
        pull_failures: list[tuple[str, int]] = []
        pulls = [0]

        def puller() -> None:
            while not stop_pulls.is_set():
                try:
                    got = _pull(stack.gw_url, reader, repo, "v1.0.0")
                except requests.RequestException as exc:
                    got = [(type(exc).__name__, 0)]
                pull_failures.extend(p for p in got if p[1] != 200)
                pulls[0] += 1

        pull_thread = threading.Thread(target=puller)
        pull_thread.start()
        time.sleep(ROSTER_REFRESH + 1)  # every gateway process knows the reader token
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {procs.ADMIN_TOKEN}"
        results: list[tuple[int, dict | None, float, float]] = []
        lock = threading.Lock()
        started = threading.Event()

        def client(n: int) -> None:
            for i in range(25):
                body = {"repository": repo, "environment": ["develop", "staging"][n % 2],
                        "digest": images[(n + i) % 2].digest}
                sent = time.monotonic()
                try:
                    resp = session.post(f"{stack.gw_url}/api/v1/promotions", json=body,
                                        timeout=30)
                    entry = (resp.status_code, resp.json(), sent, time.monotonic())
                except requests.RequestException:
                    entry = (0, None, sent, time.monotonic())
                with lock:
                    results.append(entry)
                    if len(results) >= 40:
                        started.set()
                time.sleep(1.0)  # the burst spans before, during and after the failover

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        assert started.wait(60)
        old_port = stack.redis.port
        stack.redis.kill()  # SIGKILL of the primary
        killed = time.monotonic()
        wait_for(lambda: _master(sentinels) not in (None, old_port), timeout=30, interval=0.2)
        failed_over = time.monotonic() - killed
        stack.redis.start()  # as a supervisor would: it comes back, the sentinels demote it
        for t in threads:
            t.join(300)
        stop_pulls.set()
        pull_thread.join(60)
        old = redis.Redis(port=old_port, decode_responses=True)
        wait_for(lambda: old.info("replication")["role"] == "slave", timeout=60, interval=0.5)
        assert old.info("replication")["master_port"] == replica.port

        statuses = [status for status, *_ in results]
        assert len(results) == 200
        assert set(statuses) <= {201, 503, 409}, statuses
        acknowledged = {body["id"] for status, body, *_ in results if status == 201}
        recorded = {r["id"] for env in ("develop", "staging") for r in _history(stack, repo, env)}
        # every 201 is in the history, nothing that got an error is
        assert recorded == acknowledged
        for env in ("develop", "staging"):
            pointer = _pointer(stack, repo, env)
            assert _registry_tag(stack, repo, env) == pointer
            assert _history(stack, repo, env)[0]["digest"] == pointer
        refused = [(sent, answered) for status, _, sent, answered in results if status != 201]
        late = [status for status, _, sent, _ in results
                if sent >= killed + FAILOVER_DEADLINE and status != 201]
        assert late == []
        assert pull_failures == [], pull_failures[:10]
        unavailable = max((answered for _, answered in refused), default=killed) - killed
        report("primary killed during 200 promotions (Sentinel failover)",
               sent=len(results), acknowledged=len(acknowledged), refused=len(refused),
               recorded=len(recorded), lost=0, failover_s=round(failed_over, 1),
               writes_unavailable_s=round(unavailable, 1), pulls=pulls[0], pull_failures=0,
               old_primary="replica")
    finally:
        stack.stop()
        replica.stop()
        for sentinel in sentinels:
            sentinel.stop()


def test_acknowledged_writes_wait_for_a_replica(tmp_path: Path):
    """With TAGWARDEN_REDIS_MIN_REPLICAS=1 every acknowledged write, not only promotions,
    is on a replica before it is answered: with the replica frozen a token, a policy, a
    manifest push and a promotion are each refused 503 saying why (reads still work); with
    it back they succeed, and a token acknowledged just before the primary is SIGKILLed is
    still there after the failover."""
    stack, replica, sentinels = _ha_stack(tmp_path)
    ci_creds = ("ci", procs.ADMIN_TOKEN)
    try:
        _policy(stack)
        repo = "ha/durable"
        image = oci.simple_image("durable")
        _push(stack, tmp_path, image, f"{repo}:v1.0.0")
        admin = stack.admin()
        manifest_put = (f"{stack.gw_url}/v2/{repo}/manifests/v1.0.1",
                        {"Content-Type": oci.OCI_MANIFEST})
        writes = {
            "token": lambda: admin.post(f"{stack.gw_url}/api/v1/tokens", timeout=30, json={
                "name": f"durable-{uuid.uuid4().hex[:6]}", "role": "reader"}),
            "policy": lambda: admin.put(f"{stack.gw_url}/api/v1/policies/durable", timeout=30,
                                        json={**NO_GATES, "name": "durable",
                                              "repositories": ["ha/x/*"]}),
            "manifest push": lambda: requests.put(manifest_put[0], data=image.manifest_bytes(),
                                                  headers=manifest_put[1], auth=ci_creds,
                                                  timeout=30),
            "promotion": lambda: admin.post(f"{stack.gw_url}/api/v1/promotions", timeout=30,
                                            json={"repository": repo, "environment": "develop",
                                                  "digest": image.digest}),
        }
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            refused = {}
            for name, write in writes.items():
                sent = time.monotonic()
                resp = write()
                refused[name] = (resp.status_code, round(time.monotonic() - sent, 2))
                assert resp.status_code == 503, (name, resp.status_code, resp.text)
                assert "replica" in resp.text, (name, resp.text)
            assert admin.get(f"{stack.gw_url}/api/v1/tokens", timeout=10).status_code == 200
            assert requests.get(f"{stack.gw_url}/v2/{repo}/manifests/v1.0.0", auth=ci_creds,
                                headers={"Accept": ACCEPT}, timeout=10).status_code == 200
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        for name, write in writes.items():
            resp = wait_for(lambda w=write: (r := w()).status_code in (200, 201) and r,
                            timeout=20, interval=0.5)
            assert resp, name
        last = admin.post(f"{stack.gw_url}/api/v1/tokens", timeout=30, json={
            "name": "durable-last", "role": "reader"})
        assert last.status_code == 201, last.text
        old_port = stack.redis.port
        stack.redis.kill()
        wait_for(lambda: _master(sentinels) not in (None, old_port), timeout=30, interval=0.2)
        names = wait_for(lambda: (r := admin.get(f"{stack.gw_url}/api/v1/tokens", timeout=10)
                                  ).status_code == 200 and [t["name"] for t in r.json()["items"]],
                         timeout=30, interval=0.5)
        assert names and "durable-last" in names, names
        # the worker and its RQ scheduler followed the failover: a delivery job runs, its
        # first attempt fails, and the retry arrives (a retry with a backoff waits in RQ's
        # ScheduledJobRegistry: only a running scheduler queues it; the lost worker's lock
        # left alone would hold every scheduler off for a minute)
        # (writes wait for the old primary to come back as the new primary's replica)
        stack.redis.start()
        receiver = Receiver(500)
        try:
            assert wait_for(lambda: admin.post(
                f"{stack.gw_url}/api/v1/subscriptions", timeout=10, json={
                    "url": receiver.url, "events": ["promotion.succeeded"], "secret": "x" * 20,
                    "repositories": [repo]}).status_code == 201, timeout=60, interval=0.5)
            promoted = admin.post(f"{stack.gw_url}/api/v1/promotions", timeout=30, json={
                "repository": repo, "environment": "staging", "digest": image.digest})
            assert promoted.status_code == 201, promoted.text
            wait_for(lambda: receiver.arrivals, timeout=30, interval=0.2)
            receiver.status = 200
            wait_for(lambda: len(receiver.arrivals) >= 2, timeout=60, interval=0.2)
            retried_after = round(receiver.arrivals[1] - receiver.arrivals[0], 1)
            ids = [headers.get("X-Tagwarden-Delivery") for headers, _ in receiver.requests]
            assert len(set(ids[:2])) == 1, (ids, retried_after)  # one delivery, retried
        finally:
            receiver.close()
        assert stack.worker is not None and stack.worker.proc.poll() is None  # not restarted
        # the CLI finds the new primary through the sentinels too: the worker's liveness
        health = subprocess.run([str(Path(sys.executable).parent / "tagwarden"), "healthcheck",
                                 "--worker"], env=stack.env, capture_output=True, text=True,
                                timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr
        report("acknowledged writes with a frozen replica (TAGWARDEN_REDIS_MIN_REPLICAS=1)",
               refused=refused, after_failover="token acknowledged before SIGKILL present",
               scheduled_retry_after_failover_s=retried_after)
    finally:
        stack.stop()
        replica.stop()
        for sentinel in sentinels:
            sentinel.stop()
