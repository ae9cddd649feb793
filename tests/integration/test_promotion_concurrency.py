"""Concurrency across threads and across gateway processes; a crash repaired by reconciliation."""

from __future__ import annotations

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from rq import SimpleWorker

from service.config import Settings
from service.core import jobs
from service.services import Services
from service.store.promotions import LOCK_TIMEOUT
from testkit import procs
from tests.integration.conftest import Stack, start_stack
from tests.integration.test_promotions import POLICY, push, registry_digest
from tests.integration.test_webhooks import wait_for


@pytest.fixture(scope="module")
def second_gateway(stack: Stack, tmp_path_factory):
    """Another gunicorn master sharing the same Redis and registry (scale-out)."""
    proc = procs.gateway_server(tmp_path_factory.mktemp("gw2"), stack.env)
    yield f"http://127.0.0.1:{proc.port}"
    proc.stop()


@pytest.fixture(scope="module")
def policy(stack: Stack):
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/promo", json=POLICY, timeout=10)
    assert resp.status_code == 200


def _svc(stack: Stack) -> Services:
    return Services.build(Settings.from_mapping({
        "redis_url": stack.env["TAGWARDEN_REDIS_URL"],
        "registry_url": stack.env["TAGWARDEN_REGISTRY_URL"],
    }))


def test_fifty_concurrent_promotions_across_two_gateways_agree(
        stack: Stack, second_gateway: str, policy, tmp_path: Path):
    repo = "promo/race"
    a = push(stack, tmp_path, "race-a", f"{repo}:v1.0.0")
    b = push(stack, tmp_path, "race-b", f"{repo}:v2.0.0")
    digests = [a.digest, b.digest]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {procs.ADMIN_TOKEN}"
    urls = [stack.gw_url, second_gateway]

    def one(i: int) -> int:
        resp = session.post(f"{urls[i % 2]}/api/v1/promotions", json={
            "repository": repo, "environment": "develop", "digest": digests[(i // 2) % 2]},
            timeout=60)
        return resp.status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(50)))
    assert statuses.count(201) == 50, statuses
    svc = _svc(stack)
    pointer = svc.environments.digests(repo)["develop"]
    newest = svc.promotions.recent(repo, "develop", 1)[0]
    assert registry_digest(stack, repo, "develop") == pointer == newest["digest"]
    history = svc.promotions.recent(repo, "develop", 100)
    assert len(history) == 50
    # each record's previous digest is the digest of the record before it: no lost update
    for newer, older in zip(history, history[1:], strict=False):
        assert newer["previous_digest"] == older["digest"]


def _reconcile(stack: Stack, monkeypatch) -> dict:
    """One reconciliation pass run to the end here (the stack has no worker); its result."""
    from workers.context import services

    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAGWARDEN_QUEUE", "crash-repair")  # not the pushes' drains and scans
    svc = Services.build(Settings.from_env())
    services.cache_clear()
    job = jobs.enqueue_reconcile(svc.queue)
    SimpleWorker([svc.queue], connection=svc.rq_redis).work(burst=True)
    services.cache_clear()
    return job.return_value()


def test_crash_between_registry_and_redis_is_repaired_by_reconciliation(
        tmp_path: Path, monkeypatch):
    """A real gunicorn worker is SIGKILLed after writing the environment tag to the registry
    and before the commit to Redis; reconciliation turns its intent into exactly one history
    record, and the client's retry with its Idempotency-Key gets that record."""
    stack = start_stack(tmp_path, worker=False, TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE="3")
    try:
        assert stack.admin().put(f"{stack.gw_url}/api/v1/policies/promo", json=POLICY,
                                 timeout=10).status_code == 200
        repo = "promo/crash"
        one = push(stack, tmp_path, "crash-1", f"{repo}:v1.0.0")
        two = push(stack, tmp_path, "crash-2", f"{repo}:v2.0.0")
        first = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json={
            "repository": repo, "environment": "develop", "tag": "v1.0.0"}, timeout=30)
        assert first.status_code == 201
        body = {"repository": repo, "environment": "develop", "tag": "v2.0.0"}
        key = {"Idempotency-Key": f"crash-{uuid.uuid4().hex}"}
        outcome: list = []

        def attempt() -> None:
            try:
                outcome.append(stack.admin().post(f"{stack.gw_url}/api/v1/promotions",
                                                  json=body, headers=key, timeout=30))
            except requests.RequestException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=attempt)
        thread.start()
        wait_for(lambda: registry_digest(stack, repo, "develop") == two.digest, timeout=20,
                 interval=0.05)
        for child in psutil.Process(stack.gateway.pid).children():
            child.send_signal(signal.SIGKILL)  # the gunicorn worker, in its post-write pause
        thread.join(30)
        assert len(outcome) == 1 and (isinstance(outcome[0], requests.RequestException)
                                      or outcome[0].status_code >= 500), outcome
        svc = _svc(stack)
        intent = svc.promotions.intent(repo, "develop")
        assert intent is not None and intent["record"]["digest"] == two.digest
        assert svc.environments.digests(repo) == {"develop": one.digest}  # not committed
        assert [r["id"] for r in svc.promotions.recent(repo, "develop", 5)] == [
            first.json()["id"]]

        # the dead worker's lock still guards the environment until it expires; until then a
        # pass leaves the intent to what looks like a live promotion
        wait_for(lambda: not svc.promotions.lock(repo, "develop").locked(),
                 timeout=LOCK_TIMEOUT + 5, interval=0.2)
        repaired = _reconcile(stack, monkeypatch)
        assert repaired["finished"] == [intent["record"]["id"]]
        assert svc.promotions.pending_intents() == []
        assert svc.environments.digests(repo) == {"develop": two.digest}
        history = [r["id"] for r in svc.promotions.recent(repo, "develop", 5)]
        assert history == [intent["record"]["id"], first.json()["id"]]
        assert registry_digest(stack, repo, "develop") == two.digest
        again = _reconcile(stack, monkeypatch)  # exactly once: nothing left to finish
        assert (again["finished"], again["dropped"]) == ([], 0)
        retry = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json=body,
                                   headers=key, timeout=30)
        assert retry.status_code == 201 and retry.json()["id"] == intent["record"]["id"]
        assert [r["id"] for r in svc.promotions.recent(repo, "develop", 5)] == history
    finally:
        stack.stop()
