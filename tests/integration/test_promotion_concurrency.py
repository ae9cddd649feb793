"""Concurrency across threads and across gateway processes; a crash repaired by reconciliation."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from rq import SimpleWorker

from service import jobs
from service.config import Settings
from service.services import Services
from tests.helpers import oci, procs
from tests.integration.conftest import Stack
from tests.integration.test_promotions import POLICY, push, registry_digest


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


def test_crash_between_registry_and_redis_is_repaired_by_reconciliation(
        stack: Stack, policy, tmp_path: Path, monkeypatch):
    repo = "promo/crash"
    one = push(stack, tmp_path, "crash-1", f"{repo}:v1.0.0")
    two = push(stack, tmp_path, "crash-2", f"{repo}:v2.0.0")
    first = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json={
        "repository": repo, "environment": "develop", "tag": "v1.0.0"}, timeout=10)
    assert first.status_code == 201
    svc = _svc(stack)
    # what a gateway does right before dying: intent written, registry written, no commit
    from service.promotions import _record

    manifest = svc.registry.get_manifest(repo, two.digest)
    record = _record("promotion", repo, "develop", manifest, one.digest, {"tag": "v2.0.0"},
                     ["v2.0.0"], "ci", None, "promo")
    svc.promotions.write_intent({"record": record, "created_ms": 1, "repository": repo,
                                 "environment": "develop",
                                 "idempotency": {"key": "anonymous:crashed", "fp": "x"}})
    svc.registry.put_manifest(repo, "develop", manifest)
    # and an intent whose registry write never happened
    ghost = _record("promotion", repo, "staging", manifest, None, {"tag": "v2.0.0"}, [],
                    "ci", None, "promo")
    svc.promotions.write_intent({"record": ghost, "created_ms": 2, "repository": repo,
                                 "environment": "staging", "idempotency": None})

    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    # a queue the stack's own worker does not serve: the pass below runs here, to the end
    monkeypatch.setenv("TAGWARDEN_QUEUE", "crash-repair")
    svc = Services.build(Settings.from_env())
    from workers.context import services

    services.cache_clear()
    jobs.enqueue_reconcile(svc.queue)
    SimpleWorker([svc.queue], connection=svc.rq_redis).work(burst=True)
    services.cache_clear()

    assert svc.environments.digests(repo) == {"develop": two.digest}
    newest = svc.promotions.recent(repo, "develop", 5)
    assert [r["id"] for r in newest] == [record["id"], first.json()["id"]]
    assert svc.promotions.recent(repo, "staging", 5) == []
    assert svc.promotions.pending_intents() == []
    assert registry_digest(stack, repo, "develop") == two.digest
    replay = json.loads(svc.redis.get("tw:idem:anonymous:crashed"))
    assert replay["body"]["id"] == record["id"]
    assert oci.sha256_digest(manifest.body) == two.digest
