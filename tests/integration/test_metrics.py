"""/metrics of a real gateway under gunicorn: requests, proxy bytes, promotions, queue depth,
and counters that survive the death of the gunicorn worker that counted them."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from testkit import oci, procs
from tests.integration.conftest import Stack, start_stack

POLICY = {
    "name": "metered",
    "repositories": ["metered/*"],
    "promotion": {"develop": {}, "staging": {"from": "develop", "tags": ["semver"]},
                  "production": {"from": "staging", "tags": ["semver"]}},
}


def scrape(base_url: str) -> dict[tuple[str, frozenset], float]:
    resp = requests.get(f"{base_url}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, gateway and worker sharing one metrics directory."""
    workdir = tmp_path_factory.mktemp("metered")
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    stack = start_stack(workdir, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    yield stack
    stack.stop()


def test_promotion_proxy_and_request_metrics(metered: Stack, tmp_path: Path):
    admin = metered.admin()
    assert admin.put(f"{metered.gw_url}/api/v1/policies/metered", json=POLICY,
                     timeout=10).status_code == 200
    image = oci.simple_image("metered-1")
    layout = oci.write_layout(tmp_path / "img", {"img": image})
    result = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{metered.gw}/metered/app:v1.0.0")
    assert result.returncode == 0, result.stderr
    pushed = sum(len(b) for b in image.blobs().values()) + len(image.manifest_bytes())

    url = f"{metered.gw_url}/api/v1/promotions"
    ok = admin.post(url, json={"repository": "metered/app", "environment": "develop",
                               "tag": "v1.0.0"}, timeout=30)
    assert ok.status_code == 201, ok.text
    denied = admin.post(url, json={"repository": "metered/app", "environment": "production",
                                   "tag": "v1.0.0"}, timeout=30)
    assert denied.status_code == 403, denied.text
    dry = admin.post(url, json={"repository": "metered/app", "environment": "staging",
                                "from_environment": "develop", "dry_run": True}, timeout=30)
    assert dry.status_code == 200, dry.text

    samples = scrape(metered.gw_url)
    for outcome, env in (("succeeded", "develop"), ("denied", "production"),
                         ("dry_run", "staging")):
        assert value(samples, "tagwarden_promotions_total", kind="promotion",
                     environment=env, outcome=outcome) == 1, (outcome, env)
    assert value(samples, "tagwarden_http_requests_total", method="POST",
                 route="/api/v1/promotions", status="201") == 1
    assert value(samples, "tagwarden_http_request_duration_seconds_count", method="POST",
                 route="/api/v1/promotions", status="403") == 1
    # one finishing PUT per blob (layers and config) and one for the manifest
    assert value(samples, "tagwarden_http_requests_total", method="PUT",
                 route="/v2/<path:path>", status="201") == len(image.blobs()) + 1
    assert value(samples, "tagwarden_proxy_bytes_total", direction="in") >= pushed
    assert value(samples, "tagwarden_proxy_bytes_total", direction="out") > 0
    states = {dict(labels)["state"] for name, labels in samples
              if name == "tagwarden_queue_jobs"}
    assert states == {"queued", "started", "scheduled", "deferred", "failed"}
    routes = {dict(labels).get("route") for name, labels in samples
              if name == "tagwarden_http_requests_total"}
    assert all(r is None or r == "unmatched" or r.startswith("/") for r in routes)
    assert not any("metered/app" in str(r) for r in routes)  # templates, never raw paths


def _workers(master: int) -> list[psutil.Process]:
    return psutil.Process(master).children()


def test_counts_survive_the_gunicorn_workers_that_made_them(tmp_path: Path):
    """gunicorn.conf.py sets up PROMETHEUS_MULTIPROC_DIR itself when it is not set: counts
    of all workers add up, and stay after every worker that counted them was killed."""
    env = procs.gateway_env(procs.free_port(), procs.free_port())  # nothing there: /healthz
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    gateway = procs.gateway_server(tmp_path / "gw", env, workers=2, threads=4)
    base = f"http://127.0.0.1:{gateway.port}"
    try:
        label = {"method": "GET", "route": "/healthz", "status": "200"}
        start = value(scrape(base), "tagwarden_http_requests_total", **label)
        for _ in range(30):
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        assert value(scrape(base), "tagwarden_http_requests_total", **label) == start + 30
        before = {p.pid for p in _workers(gateway.pid)}
        assert len(before) == 2
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = {p.pid for p in _workers(gateway.pid)}
            if len(now) == 2 and not now & before:
                break
            time.sleep(0.2)
        answered = 0  # the probes that got their 200 from the new workers count too
        while not answered:
            assert time.monotonic() < deadline + 30, "the new workers never answered"
            try:
                answered += requests.get(f"{base}/healthz", timeout=5).status_code == 200
            except requests.ConnectionError:
                time.sleep(0.2)
        assert value(scrape(base), "tagwarden_http_requests_total",
                     **label) == start + 30 + answered
    finally:
        gateway.stop()
        assert gateway.proc is not None and gateway.proc.poll() is not None
