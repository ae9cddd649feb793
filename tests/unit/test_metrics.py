"""Metrics: helpers, bounded labels, /metrics, counting streams, multiprocess files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from service.config import Settings
from service.domain.policy_model import Decision, Violation
from service.http.app import create_app
from service.obs import metrics, multiproc

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def parse(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture(scope="module")
def app() -> Flask:
    # a Redis nobody listens on: the queue collector must not break the scrape
    return create_app(Settings(redis_url="redis://127.0.0.1:9/0"))


def test_requests_are_counted_by_route_template_not_path(app: Flask):
    client = app.test_client()
    before = sample("tagwarden_http_requests_total", method="GET", route="/healthz",
                    status="200")
    assert client.get("/healthz").status_code == 200
    assert sample("tagwarden_http_requests_total", method="GET", route="/healthz",
                  status="200") == before + 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    before_unmatched = sample("tagwarden_http_request_duration_seconds_count", **unmatched)
    assert client.get("/no/such/thing").status_code == 404
    assert sample("tagwarden_http_request_duration_seconds_count",
                  **unmatched) == before_unmatched + 1
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    values = parse(resp.get_data(as_text=True))
    key = ("tagwarden_http_requests_total",
           (("method", "GET"), ("route", "/healthz"), ("status", "200")))
    assert values[key] == before + 1
    assert not any("/no/such/thing" in str(labels) for _, labels in values)


def test_api_route_label_is_the_template(app: Flask):
    client = app.test_client()
    label = {"method": "GET", "route": "/api/v1/policies/<string:name>", "status": "401"}
    before = sample("tagwarden_http_requests_total", **label)
    # 401 without a token: both paths count under the one template
    assert client.get("/api/v1/policies/some-name").status_code == 401
    assert client.get("/api/v1/policies/other-name").status_code == 401
    assert sample("tagwarden_http_requests_total", **label) == before + 2


def test_decision_counts_allowed_once_and_denied_per_rule():
    allowed = Decision(True, "team", ())
    denied = Decision(False, "team", (Violation("push.immutable", "no", "team"),
                                      Violation("push.denied", "no", "team")))
    keys = {"immutable": {"rule": "push.immutable", "outcome": "denied"},
            "denied": {"rule": "push.denied", "outcome": "denied"},
            "allowed": {"rule": "none", "outcome": "allowed"}}
    before = {k: sample("tagwarden_policy_decisions_total", action="push", **v)
              for k, v in keys.items()}
    metrics.decision("push", allowed)
    metrics.decision("push", denied)
    after = {k: sample("tagwarden_policy_decisions_total", action="push", **v)
             for k, v in keys.items()}
    assert after == {k: v + 1 for k, v in before.items()}


def test_free_text_labels_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(metrics, "_seen", {})
    monkeypatch.setattr(metrics, "MAX_LABEL_VALUES", 3)
    assert [metrics._bounded("environment", f"env{i}") for i in range(5)] == [
        "env0", "env1", "env2", "other", "other"]
    assert metrics._bounded("environment", "env1") == "env1"
    assert metrics._bounded("environment", "white space") == "other"
    assert metrics._bounded("environment", None) == "other"
    assert metrics._bounded("rule", "x" * 64) == "other"


@pytest.mark.parametrize(("status", "outcome"), [
    (201, "succeeded"), (200, "dry_run"), (403, "denied"), (409, "conflict"),
    (404, "rejected"), (422, "rejected"), (502, "failed"), (503, "failed")])
def test_promotion_outcome_from_status(status: int, outcome: str):
    assert metrics.promotion_outcome(status) == outcome


def test_helpers_record_their_metrics():
    watched = {
        "received": ("tagwarden_webhook_events_received_total", {}),
        "deduplicated": ("tagwarden_webhook_events_deduplicated_total", {}),
        "malformed": ("tagwarden_webhook_events_malformed_total", {}),
        "failed": ("tagwarden_webhook_events_failed_total", {}),
        "scans": ("tagwarden_scans_total", {"outcome": "succeeded"}),
        "scan_seconds": ("tagwarden_scan_duration_seconds_sum", {"outcome": "succeeded"}),
        "scan_count": ("tagwarden_scan_duration_seconds_count", {"outcome": "succeeded"}),
        "delivered": ("tagwarden_deliveries_total", {"outcome": "delivered"}),
        "rollbacks": ("tagwarden_promotions_total",
                      {"kind": "rollback", "environment": "production",
                       "outcome": "succeeded"}),
    }

    def now() -> dict[str, float]:
        return {k: sample(name, **labels) for k, (name, labels) in watched.items()}

    before = now()
    metrics.webhook(accepted=3, duplicates=2, malformed=1)
    metrics.webhook_failed()
    metrics.scan("succeeded", 12.5)
    metrics.delivery("delivered")
    metrics.promotion("rollback", "production", "succeeded")
    grew = {k: v - before[k] for k, v in now().items()}
    assert grew == {"received": 6, "deduplicated": 2, "malformed": 1, "failed": 1, "scans": 1,
                    "scan_seconds": 12.5, "scan_count": 1, "delivered": 1, "rollbacks": 1}


def test_counting_stream_and_body():
    import io

    before_in = sample("tagwarden_proxy_bytes_total", direction="in")
    stream = metrics.CountingStream(io.BytesIO(b"abcdef\nghij"))
    assert stream.read(3) == b"abc"
    assert stream.readline() == b"def\n"
    assert stream.read() == b"ghij"
    assert sample("tagwarden_proxy_bytes_total", direction="in") == before_in + 11

    closed = []

    class Body:
        def __iter__(self):
            yield b"12345"
            yield b""
            yield b"678"

        def close(self):
            closed.append(True)

    before_out = sample("tagwarden_proxy_bytes_total", direction="out")
    body = metrics.CountingBody(Body())
    assert b"".join(body) == b"12345678"
    body.close()
    assert closed == [True]  # the proxy releases its upstream connection on close
    assert sample("tagwarden_proxy_bytes_total", direction="out") == before_out + 8


def test_queue_collector_reads_depth_at_scrape_time():
    conn = fakeredis.FakeRedis()
    queue = Queue("tagwarden", connection=conn)
    collector = metrics.QueueCollector(SimpleNamespace(queue=queue))
    queue.enqueue("workers.reconcile.reconcile")
    queue.enqueue("workers.reconcile.reconcile")
    [family] = list(collector.collect())
    depth = {s.labels["state"]: s.value for s in family.samples}
    assert depth == {"queued": 2, "started": 0, "scheduled": 0, "deferred": 0, "failed": 0}
    assert {s.labels["queue"] for s in family.samples} == {"tagwarden"}


def test_prepare_dir_creates_a_temporary_directory_once(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path):
    for name in (multiproc.ENV, multiproc.OWNED):
        monkeypatch.setenv(name, "")  # recorded, so what prepare_dir() sets is undone
        monkeypatch.delenv(name)
    path = multiproc.prepare_dir()
    try:
        assert os.path.isdir(path) and os.environ[multiproc.ENV] == path
        assert multiproc.prepare_dir() == path  # the workers' value, unchanged
    finally:
        multiproc.cleanup_dir()
    assert not os.path.exists(path)
    given = tmp_path / "given"
    monkeypatch.setenv(multiproc.ENV, str(given))
    monkeypatch.delenv(multiproc.OWNED)
    assert multiproc.prepare_dir() == str(given) and given.is_dir()
    multiproc.cleanup_dir()
    assert given.is_dir()  # a directory we did not create is never removed


WORKER_SCRIPT = textwrap.dedent("""
    import os
    import fakeredis
    from rq import Queue
    from service.obs import multiproc
    multiproc.setup_worker()
    from service.obs import metrics
    for outcome in ("delivered", "failed", "delivered"):   # three jobs, one horse each
        pid = os.fork()
        if pid == 0:
            metrics.delivery(outcome)
            metrics.scan("succeeded", 2.0)
            os._exit(0)
        os.waitpid(pid, 0)
    metrics.webhook_failed()   # the worker process itself
    queue = Queue("tagwarden", connection=fakeredis.FakeRedis())
    print(metrics.scrape(type("S", (), {"queue": queue})()).decode())
""")


def test_rq_horses_share_the_worker_files_and_add_up(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != multiproc.OWNED}
    env[multiproc.ENV] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", WORKER_SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    values = parse(proc.stdout)
    assert values[("tagwarden_deliveries_total", (("outcome", "delivered"),))] == 2
    assert values[("tagwarden_deliveries_total", (("outcome", "failed"),))] == 1
    assert values[("tagwarden_scans_total", (("outcome", "succeeded"),))] == 3
    assert values[("tagwarden_webhook_events_failed_total", ())] == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    # three jobs but one set of files for the horses (not one per job), one for the worker
    horses = sorted(f.split("_")[0] for f in files if "_rqhorse-" in f)
    assert horses == ["counter", "histogram"] and len(files) == 3, files
