"""More features the README promises, each on a stack of its own: the 409 of a retry while
the first idempotent attempt runs, reconciliation on its schedule (restore and record),
scans failing until a database is loaded then the rescan after an import, TAGWARDEN_VULNDB at
worker start, and the external scanner alone."""

from __future__ import annotations

import threading
from pathlib import Path

import requests

from tests.integration.conftest import Stack, start_stack
from tests.integration.test_features import api, put_policy
from tests.integration.test_promotions import push, registry_digest
from tests.integration.test_webhooks import wait_for
from tests.unit.scanner import fixtures

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
