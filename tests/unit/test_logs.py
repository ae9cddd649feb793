"""Request logs: one line per request (JSON or text), X-Request-ID in, out and into jobs."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import fakeredis
import pytest
from flask import Flask
from rq import Queue, SimpleWorker

from service.config import Settings
from service.http.app import create_app
from service.obs import logs

ROOT = Path(__file__).resolve().parents[2]


class Capture(logging.Handler):
    """Formats records with the configured handler's formatter and filters."""

    def __init__(self, like: logging.Handler) -> None:
        super().__init__()
        self.setFormatter(like.formatter)
        for f in like.filters:
            self.addFilter(f)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def app_with(fmt: str) -> tuple[Flask, Capture]:
    app = create_app(Settings(log_format=fmt))
    root = logging.getLogger("tagwarden")
    capture = Capture(root.handlers[0])
    root.addHandler(capture)

    @app.get("/_log_inside")
    def inside() -> str:
        logging.getLogger("tagwarden.test").info("inside the request")
        return "ok"

    return app, capture


@pytest.fixture(autouse=True)
def _restore_handlers():
    root = logging.getLogger("tagwarden")
    saved = list(root.handlers)
    yield
    root.handlers[:] = saved


def test_json_access_line_has_request_id_route_status_duration():
    app, capture = app_with("json")
    resp = app.test_client().get("/healthz", headers={"X-Request-ID": "req-123"})
    assert resp.headers["X-Request-ID"] == "req-123"
    line = json.loads(capture.lines[-1])
    assert line["logger"] == "tagwarden.access"
    assert {k: line[k] for k in ("request_id", "method", "path", "route", "status")} == {
        "request_id": "req-123", "method": "GET", "path": "/healthz", "route": "/healthz",
        "status": 200}
    assert isinstance(line["duration_ms"], float) and "actor" in line


def test_an_invalid_incoming_request_id_is_replaced():
    app, _ = app_with("json")
    resp = app.test_client().get("/healthz", headers={"X-Request-ID": "x" * 200})
    assert len(resp.headers["X-Request-ID"]) == 32


def test_every_line_logged_during_a_request_names_its_request_id():
    app, capture = app_with("json")
    app.test_client().get("/_log_inside", headers={"X-Request-ID": "req-inside"})
    inner = [json.loads(x) for x in capture.lines if "inside the request" in x]
    assert inner and inner[0]["request_id"] == "req-inside"


def test_text_format_is_one_readable_line_with_the_fields():
    app, capture = app_with("text")
    app.test_client().get("/healthz", headers={"X-Request-ID": "req-txt"})
    line = capture.lines[-1]
    assert "\n" not in line
    assert " INFO tagwarden.access GET /healthz 200 route=/healthz " in line
    assert line.endswith(" request_id=req-txt")
    assert "ms " in line  # the duration, e.g. "0.52ms"


def test_job_meta_carries_the_request_id_and_jobs_read_it_back():
    app, _ = app_with("json")
    with app.test_request_context("/", headers={"X-Request-ID": "req-job"}):
        app.preprocess_request()
        meta = logs.job_meta()
    assert meta == {"request_id": "req-job"}
    assert logs.job_meta() == {}  # outside a request and a job
    conn = fakeredis.FakeRedis()
    queue = Queue("t", connection=conn)
    job = queue.enqueue("service.obs.logs.current_request_id", meta=meta)
    SimpleWorker([queue], connection=conn).work(burst=True)
    job.refresh()
    assert job.return_value() == "req-job"


def test_workers_importing_logs_do_not_import_flask():
    code = "import sys, service.obs.logs, service.core.jobs; print('flask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def _json_line(**kwargs) -> dict:
    logs.setup_logging("json")
    root = logging.getLogger("tagwarden")
    capture = Capture(root.handlers[0])
    root.addHandler(capture)
    logging.getLogger("tagwarden.test").info("hello %s", "there", **kwargs)
    return json.loads(capture.lines[-1])


def test_json_lines_carry_the_named_fields_only():
    line = _json_line(extra={"fields": {"route": "/r", "status": 200, "when": object()},
                             "password": "hunter2"})
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert {k: line[k] for k in ("level", "logger", "message", "route", "status")} == {
        "level": "info", "logger": "tagwarden.test", "message": "hello there", "route": "/r",
        "status": 200}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), line["time"]
    assert line["when"].startswith("<object object")  # not JSON: its str()
    assert "password" not in line and "hunter2" not in json.dumps(line)  # extras are not logged


def test_json_lines_carry_a_traceback_under_exception():
    logs.setup_logging("json")
    root = logging.getLogger("tagwarden")
    capture = Capture(root.handlers[0])
    root.addHandler(capture)
    try:
        raise ValueError("broken")
    except ValueError:
        logging.getLogger("tagwarden.test").exception("failed")
    line = json.loads(capture.lines[-1])
    assert line["level"] == "error" and line["message"] == "failed"
    assert line["exception"].startswith("Traceback") and "ValueError: broken" in line["exception"]


def test_logs_module_does_not_import_flask():
    tree = ast.parse((ROOT / "service" / "obs" / "logs.py").read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] == "flask"}


def _batching(interval: float) -> tuple[logs.BatchingHandler, io.StringIO, logging.Logger]:
    stream = io.StringIO()
    handler = logs.BatchingHandler(stream, interval=interval)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"tagwarden.test.batch.{uuid.uuid4().hex}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return handler, stream, logger


def test_batched_lines_from_many_threads_all_arrive_in_order_per_thread():
    handler, stream, logger = _batching(0.02)

    def log(n: int) -> None:
        for i in range(500):
            logger.info("t%d %d", n, i)

    threads = [threading.Thread(target=log, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while stream.getvalue().count("\n") < 4000 and time.monotonic() < deadline:
        time.sleep(0.02)  # the writer thread, not a flush by the test, writes them
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4000
    for n in range(8):
        assert [int(x.split()[2]) for x in lines if x.split()[1] == f"t{n}"] == list(range(500))


def test_a_warning_is_written_at_once_after_the_lines_before_it():
    handler, stream, logger = _batching(60.0)  # the writer thread would wait a minute
    logger.info("first")
    logger.info("second")
    assert stream.getvalue() == ""
    logger.warning("trouble")
    assert stream.getvalue().splitlines() == ["INFO first", "INFO second", "WARNING trouble"]


def test_an_info_line_takes_no_lock_held_by_another_thread():
    handler, stream, logger = _batching(60.0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with handler.lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    done = threading.Event()
    threading.Thread(target=lambda: (logger.info("free"), done.set())).start()
    try:
        assert done.wait(2)  # the stock handler would block here until the lock is free
    finally:
        release.set()
        holder.join()
    handler.flush()
    assert stream.getvalue() == "INFO free\n"
