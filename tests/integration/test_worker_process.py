"""The `tagwarden worker` process itself: it stops when told, whether idle or busy (its loop
starts a new RQ worker only after a lost Redis connection, tests/faults/test_ha.py)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis
from rq import Worker

from testkit import procs

STOP_DEADLINE = 8.0  # RQ's warm shutdown of an idle worker takes about a second


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_worker_stops_on_a_signal(tmp_path: Path, sig: signal.Signals):
    server = procs.redis_server(tmp_path / "redis")
    worker = procs.worker_process(tmp_path / "worker",
                                  procs.gateway_env(server.port, procs.free_port()))
    try:
        client = redis.Redis(port=server.port)
        deadline = time.monotonic() + 30
        while not Worker.all(connection=client):
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.2)
        time.sleep(1)  # past the start: idle, blocked on the queue
        assert worker.proc is not None
        worker.proc.send_signal(sig)
        sent = time.monotonic()
        code = worker.proc.wait(timeout=STOP_DEADLINE)
        assert code == 0, worker.log_tail()
        assert time.monotonic() - sent < STOP_DEADLINE
        assert "starting a new one" not in worker.log.read_text()
    finally:
        worker.stop()
        server.stop()
