"""`tagwarden healthcheck` (the image's HEALTHCHECK, compose's gateway and worker checks)
against the real stack: the gateway's /healthz and this host's RQ worker in Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from testkit import procs
from tests.integration.conftest import Stack

TAGWARDEN = str(Path(sys.executable).parent / "tagwarden")


def check(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TAGWARDEN_")}
    full.update({**stack.env, "TAGWARDEN_BIND": f"0.0.0.0:{stack.gateway.port}", **env})
    done = subprocess.run([TAGWARDEN, "healthcheck", *args], env=full, capture_output=True,
                          text=True, timeout=60, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_gateway_healthy_and_unhealthy(stack: Stack):
    done = check(stack)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"healthy: gateway http://127.0.0.1:{stack.gateway.port}/healthz "
                           "answered 200\n")
    port = procs.free_port()
    down = check(stack, TAGWARDEN_BIND=f"0.0.0.0:{port}")
    assert down.returncode == 1 and down.stdout == ""
    assert down.stderr.startswith(f"unhealthy: gateway http://127.0.0.1:{port}/healthz: ")
    assert len(down.stderr.splitlines()) == 1


def test_a_gateway_that_does_not_answer_is_unhealthy_within_the_timeout(stack: Stack):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        done = check(stack, "--timeout", "1", TAGWARDEN_BIND=f"0.0.0.0:{silent.getsockname()[1]}")
        elapsed = time.monotonic() - started
    assert done.returncode == 1 and done.stderr.startswith("unhealthy: gateway ")
    assert "timed out" in done.stderr, done.stderr
    assert elapsed < 15


def test_worker_healthy_and_unhealthy(stack: Stack):
    deadline = time.monotonic() + 60
    done = check(stack, "--worker")
    while done.returncode != 0 and time.monotonic() < deadline:  # the worker may be starting
        time.sleep(0.5)
        done = check(stack, "--worker")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("healthy: worker of ") and "on queue 'tagwarden'" in done.stdout
    other_queue = check(stack, "--worker", TAGWARDEN_QUEUE="nobody-works-here")
    assert other_queue.returncode == 1
    assert other_queue.stderr.startswith("unhealthy: no worker of ")
    started = time.monotonic()
    no_redis = check(stack, "--worker", "--timeout", "2",
                     TAGWARDEN_REDIS_URL=f"redis://127.0.0.1:{procs.free_port()}/0")
    assert no_redis.returncode == 1 and no_redis.stderr.startswith("unhealthy: ")
    assert len(no_redis.stderr.splitlines()) == 1
    assert time.monotonic() - started < 30
