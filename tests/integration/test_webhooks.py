"""Registry notifications in, drift healed, signed notifications out — all real processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis as redis_lib
import requests
from rq import Queue
from rq.job import Job
from rq.registry import FinishedJobRegistry

from service.core.jobs import delivery_intervals
from testkit import oci, procs
from tests.integration.conftest import Stack
from tests.integration.test_promotions import push, registry_digest

POLICY = {
    "name": "hooks",
    "repositories": ["hooks/*"],
    "promotion": {"develop": {}, "staging": {"from": "develop"},
                  "production": {"from": "staging"}},
}
EVENTS_TYPE = "application/vnd.docker.distribution.events.v1+json"


def wait_for(check, timeout: float = 20.0, interval: float = 0.2):
    """Poll `check` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture(scope="module")
def policy(stack: Stack):
    resp = stack.admin().put(f"{stack.gw_url}/api/v1/policies/hooks", json=POLICY, timeout=10)
    assert resp.status_code == 200, resp.text


class Receiver:
    """A local HTTP endpoint recording what it receives, answering a chosen status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[dict, bytes]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrivals.append(time.monotonic())
                outer.requests.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def events(stack: Stack, **params) -> list[dict]:
    resp = stack.admin().get(f"{stack.gw_url}/api/v1/events", params=params, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def test_push_through_gateway_is_recorded_as_event(stack: Stack, policy, tmp_path: Path):
    image = push(stack, tmp_path, "hooks-events", "hooks/events:v1.0.0")
    found = wait_for(lambda: [e for e in events(stack, repository="hooks/events", action="push")
                              if e.get("tag") == "v1.0.0"])
    assert found[0]["digest"] == image.digest
    assert found[0]["source"] == "registry"


def test_direct_push_of_environment_tag_is_detected_and_restored(stack: Stack, policy,
                                                                 tmp_path: Path):
    repo = "hooks/drift"
    good = push(stack, tmp_path, "drift-good", f"{repo}:v1.0.0")
    for env, src in (("develop", {"tag": "v1.0.0"}), ("staging", {"from_environment": "develop"}),
                     ("production", {"from_environment": "staging"})):
        resp = stack.admin().post(f"{stack.gw_url}/api/v1/promotions",
                                  json={"repository": repo, "environment": env, **src},
                                  timeout=10)
        assert resp.status_code == 201, resp.text
    rogue = oci.simple_image("drift-rogue")
    layout = oci.write_layout(tmp_path / "rogue", {"img": rogue})
    direct = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.reg}/{repo}:production")
    assert direct.returncode == 0, direct.stderr
    wait_for(lambda: registry_digest(stack, repo, "production") == good.digest)
    drift = wait_for(lambda: events(stack, repository=repo, action="drift.detected"))
    assert drift[0]["tag"] == "production"
    assert drift[0]["expected_digest"] == good.digest
    assert drift[0]["found_digest"] == rogue.digest
    assert drift[0]["restored"] is True


def test_subscription_receives_signed_promotion_event(stack: Stack, policy, tmp_path: Path):
    receiver = Receiver(200)
    secret = "s3cret-for-signing-" + uuid.uuid4().hex
    try:
        sub = stack.admin().post(f"{stack.gw_url}/api/v1/subscriptions", json={
            "url": receiver.url, "events": ["promotion.succeeded"], "secret": secret,
            "repositories": ["hooks/signed"]}, timeout=10)
        assert sub.status_code == 201, sub.text
        assert "secret" not in sub.json()
        push(stack, tmp_path, "signed-1", "hooks/signed:v1.0.0")
        record = stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json={
            "repository": "hooks/signed", "environment": "develop", "tag": "v1.0.0"},
            timeout=10).json()
        wait_for(lambda: receiver.requests)
        headers, body = receiver.requests[0]
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Tagwarden-Signature"] == expected
        assert headers["X-Tagwarden-Event"] == "promotion.succeeded"
        payload = json.loads(body)
        assert payload["delivery"] == headers["X-Tagwarden-Delivery"]
        assert payload["repository"] == "hooks/signed"
        assert payload["environment"] == "develop"
        assert payload["digest"] == record["digest"]
        assert payload["data"]["id"] == record["id"]
        assert payload["link"].endswith(f"/api/v1/promotions/{record['id']}")
        sub_id = sub.json()["id"]
        deliveries = wait_for(lambda: [d for d in stack.admin().get(
            f"{stack.gw_url}/api/v1/subscriptions/{sub_id}/deliveries", timeout=10
        ).json()["items"] if d["status"] == "delivered"])
        assert deliveries[0]["attempts"][0]["status"] == 200
    finally:
        receiver.close()


def test_failing_endpoint_is_retried_with_backoff(stack: Stack, policy, tmp_path: Path):
    """Five attempts in all, the gaps between them growing by the configured factor (x3 from
    TAGWARDEN_DELIVERY_BACKOFF), no sixth one (the fifth attempt ends the RQ job), and the
    delivery ends `failed` with every attempt recorded."""
    base = int(stack.env["TAGWARDEN_DELIVERY_BACKOFF"])
    receiver = Receiver(500)
    try:
        sub = stack.admin().post(f"{stack.gw_url}/api/v1/subscriptions", json={
            "url": receiver.url, "events": ["promotion.succeeded"],
            "secret": "x" * 20, "repositories": ["hooks/failing"]}, timeout=10).json()
        push(stack, tmp_path, "failing-1", "hooks/failing:v1.0.0")
        assert stack.admin().post(f"{stack.gw_url}/api/v1/promotions", json={
            "repository": "hooks/failing", "environment": "develop", "tag": "v1.0.0"},
            timeout=10).status_code == 201
        url = f"{stack.gw_url}/api/v1/subscriptions/{sub['id']}/deliveries"
        backoffs = delivery_intervals(base)  # between attempts 1-2, ..., 4-5
        wait_for(lambda: len(receiver.arrivals) >= 5, timeout=sum(backoffs) + 30, interval=0.1)
        delivery_id = receiver.requests[0][0]["X-Tagwarden-Delivery"]
        # no sixth attempt can come: the fifth ends the job (finished, answering "failed";
        # an attempt that is not the last raises, and RQ schedules the job again)
        queue = Queue("tagwarden", connection=redis_lib.Redis(port=stack.redis.port))

        def given_up() -> Job | None:
            for job_id in FinishedJobRegistry(queue=queue).get_job_ids():
                job = Job.fetch(job_id, connection=queue.connection)
                if job.args and job.args[0] == delivery_id:
                    return job
            return None

        job = wait_for(given_up, timeout=30, interval=0.2)
        assert job.return_value() == "failed"
        time.sleep(base * 3)  # more than RQ's scheduler tick: nothing arrives meanwhile
        assert len(receiver.requests) == 5
        gaps = [b - a for a, b in zip(receiver.arrivals, receiver.arrivals[1:], strict=False)]
        ratios = [b / a for a, b in zip(gaps, gaps[1:], strict=False)]
        # each gap grows; RQ's scheduler enqueues on a 1 s tick, which blurs the first ratio
        # (1 s vs 3 s backoff) but hardly the later ones (x3 configured)
        assert all(r > 1.2 for r in ratios) and min(ratios[1:]) > 2, (gaps, ratios)
        items = stack.admin().get(url, timeout=10).json()["items"]
        assert len(items) == 1
        delivery = items[0]
        assert delivery["status"] == "failed"
        assert [a["status"] for a in delivery["attempts"]] == [500] * 5
        assert {h["X-Tagwarden-Delivery"] for h, _ in receiver.requests} == {delivery["id"]}
    finally:
        receiver.close()


def test_receiver_rejects_bad_input_and_deduplicates(stack: Stack):
    url = f"{stack.gw_url}/api/v1/webhooks/registry"
    auth = {"Authorization": f"Bearer {procs.WEBHOOK_TOKEN}", "Content-Type": EVENTS_TYPE}
    event = {"id": str(uuid.uuid4()), "action": "pull", "timestamp": "2026-11-28T00:00:00Z",
             "target": {"repository": "hooks/seen", "digest": "sha256:" + "1" * 64,
                        "mediaType": oci.OCI_MANIFEST}}
    assert requests.post(url, json={"events": [event]}, timeout=5).status_code == 401
    wrong = {**auth, "Authorization": "Bearer nope-nope-nope-nope"}
    assert requests.post(url, data=json.dumps({"events": []}), headers=wrong,
                         timeout=5).status_code == 401
    text = {**auth, "Content-Type": "text/plain"}
    assert requests.post(url, data="{}", headers=text, timeout=5).status_code == 415
    assert requests.post(url, data="{nope", headers=auth, timeout=5).status_code == 400
    assert requests.post(url, data='{"no": 1}', headers=auth, timeout=5).status_code == 400
    status, answer = procs.raw_request(stack.gateway.port, (
        "POST /api/v1/webhooks/registry HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {procs.WEBHOOK_TOKEN}\r\nContent-Type: {EVENTS_TYPE}\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n"), b'{"events": [' + b" " * 4096)
    assert status == 413  # answered from the headers: the 10 MiB were never sent
    assert json.loads(answer)["code"] == "payload_too_large"
    body = json.dumps({"events": [event, event, {"id": "x"}, "junk"]})
    first = requests.post(url, data=body, headers=auth, timeout=5)
    assert first.status_code == 200
    assert first.json() == {"accepted": 1, "duplicates": 1, "skipped": 2}
    again = requests.post(url, data=body, headers={**auth, "Content-Type": "application/json"},
                          timeout=5)
    assert again.json() == {"accepted": 0, "duplicates": 2, "skipped": 2}
    recorded = wait_for(lambda: events(stack, repository="hooks/seen"))
    assert [e["id"] for e in recorded] == [event["id"]]


def _webhook_requests_counted(stack: Stack) -> float:
    text = requests.get(f"{stack.gw_url}/metrics", timeout=5).text
    want = ('tagwarden_http_requests_total{method="POST",route="/api/v1/webhooks/registry",'
            'status="200"} ')
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(want))


def test_accepted_envelopes_take_the_fast_lane_and_failures_the_flask_route(stack: Stack):
    """An accepted envelope is answered without Flask (request id echoed, counted in the
    metrics, logged at debug only); a refused one gets the Flask route's error envelope and
    its INFO access line."""
    url = f"{stack.gw_url}/api/v1/webhooks/registry"
    fast_rid, slow_rid = f"fast-{uuid.uuid4().hex}", f"slow-{uuid.uuid4().hex}"
    event = {"id": str(uuid.uuid4()), "action": "pull", "timestamp": "2026-11-28T00:00:00Z",
             "target": {"repository": "hooks/fast", "digest": "sha256:" + "2" * 64,
                        "mediaType": oci.OCI_MANIFEST}}
    counted = _webhook_requests_counted(stack)
    ok = requests.post(url, data=json.dumps({"events": [event]}), timeout=5, headers={
        "Authorization": f"Bearer {procs.WEBHOOK_TOKEN}", "Content-Type": EVENTS_TYPE,
        "X-Request-ID": fast_rid})
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"accepted": 1, "duplicates": 0, "skipped": 0}
    assert ok.headers["X-Request-ID"] == fast_rid
    assert ok.headers["Content-Type"] == "application/json"
    assert _webhook_requests_counted(stack) == counted + 1
    refused = requests.post(url, data=json.dumps({"events": [event]}), timeout=5, headers={
        "Authorization": "Bearer wrong-wrong-wrong-wrong", "Content-Type": EVENTS_TYPE,
        "X-Request-ID": slow_rid})
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized"
    assert refused.headers["X-Request-ID"] == slow_rid
    log = wait_for(lambda: slow_rid in stack.gateway.log.read_text(errors="replace")
                   and stack.gateway.log.read_text(errors="replace"))
    assert fast_rid not in log
    assert wait_for(lambda: events(stack, repository="hooks/fast"))


def test_subscriptions_refuse_internal_urls_and_bad_fields(stack: Stack):
    url = f"{stack.gw_url}/api/v1/subscriptions"
    for target in ("http://169.254.169.254/latest", "http://10.1.2.3/x", "ftp://example.com/",
                   "http://user:pw@127.0.0.1/x"):
        resp = stack.admin().post(url, json={"url": target, "events": ["scan.completed"],
                                             "secret": "y" * 20}, timeout=10)
        assert resp.status_code in (400, 422), (target, resp.text)
        assert "url" in resp.json().get("errors", {}), resp.text
    bad = stack.admin().post(url, json={"url": "http://127.0.0.1:1/x", "events": ["nope"],
                                        "secret": "short"}, timeout=10)
    assert bad.status_code == 422
    assert set(bad.json()["errors"]) == {"events.0", "secret"}


def test_a_trickle_of_events_is_drained_by_few_jobs(private_stack: Stack):
    """The registry posts one event per request: a drain job lingers on an empty inbox
    instead of ending (and forking a new work horse for the next event)."""
    from rq import Queue
    from rq.registry import FinishedJobRegistry

    queue = Queue("tagwarden", connection=redis_bytes(private_stack))
    finished = FinishedJobRegistry(queue=queue)
    before = len(finished)
    url = f"{private_stack.gw_url}/api/v1/webhooks/registry"
    headers = {"Authorization": f"Bearer {procs.WEBHOOK_TOKEN}", "Content-Type": EVENTS_TYPE}
    for i in range(20):
        # a tag delete: an event a worker must process (pulls and blob pushes are recorded
        # by the receiver itself)
        event = {"id": str(uuid.uuid4()), "action": "delete",
                 "timestamp": "2026-11-28T00:00:00Z",
                 "target": {"repository": "hooks/trickle", "tag": f"gone-{i}"}}
        resp = requests.post(url, data=json.dumps({"events": [event]}), headers=headers,
                             timeout=5)
        assert resp.json()["accepted"] == 1
        time.sleep(0.03)
    wait_for(lambda: len(events(private_stack, repository="hooks/trickle", limit=50)) == 20)
    drains = len(finished) - before
    assert 1 <= drains <= 3, f"{drains} drain jobs for 20 events 30 ms apart"


def redis_bytes(stack: Stack):
    import redis

    return redis.Redis(port=stack.redis.port)
