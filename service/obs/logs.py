"""Structured logs (JSON through python-json-logger, or text) and request ids, carried into
RQ jobs.

No Flask here: RQ workers import this module (through service.core.jobs) and never load
Flask; the gateway's request hooks are in service.http.request_log.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as LibraryJsonFormatter

REQUEST_ID_HEADER = "X-Request-ID"
ENVIRON_KEY = "tagwarden.request_id"
JOB_META_KEY = "request_id"
# access-line fields shown by the text format after the message, in this order
TEXT_FIELDS = ("route", "duration_ms", "actor", "client", "request_id")
# the gateway's INFO lines reach the stream within this many seconds (see BatchingHandler)
FLUSH_INTERVAL = 0.05
# lines waiting for the writer; past this the logging thread writes them itself
PENDING_MAX = 10_000


def current_request_id() -> str | None:
    """The id of the request being handled, or of the request that queued the running job."""
    flask = sys.modules.get("flask")
    if flask is not None and flask.has_request_context():
        return flask.request.environ.get(ENVIRON_KEY)
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        value = job.meta.get(JOB_META_KEY)
        return value if isinstance(value, str) else None
    return None


def job_meta() -> dict[str, str]:
    """`meta` for queue.enqueue(): the current request id, so a job's logs can name it."""
    rid = current_request_id()
    return {JOB_META_KEY: rid} if rid else {}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record made while a request or a job is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if not (isinstance(fields, dict) and "request_id" in fields):
            try:
                record.request_id = current_request_id()
            except Exception:  # noqa: BLE001 - a log line must never fail for its context
                record.request_id = None
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", None) or {})
    rid = getattr(record, "request_id", None)
    if "request_id" not in fields and rid:
        fields["request_id"] = rid
    return fields


class JsonFormatter(LibraryJsonFormatter):
    """One JSON object per line: time, level, logger, message, then the record's `fields`
    (and its request id), then a traceback under `exception`. Other `extra` attributes of a
    record are left out, as the text format leaves them out: only named fields are logged."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level",
                                        "name": "logger", "exc_info": "exception"},
                         json_default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """UTC with milliseconds: 2026-12-01T04:36:36.123Z."""
        return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z")

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        """The format's fields (level in lower case), the record's `fields`, the traceback:
        not the library's default of every `extra` attribute."""
        for field in self._required_fields:
            log_data[self._get_rename(field)] = record.__dict__.get(field)
        log_data["level"] = record.levelname.lower()
        log_data.update(_fields(record))
        for key, value in message_dict.items():
            log_data[self._get_rename(key)] = value


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` for humans (TAGWARDEN_LOG_FORMAT=text)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        extra = []
        for key in TEXT_FIELDS:
            value = fields.get(key)
            if value is None:
                continue
            extra.append(f"{value}ms" if key == "duration_ms" else f"{key}={value}")
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {' '.join(extra)}{sep}{tail}"


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler for a process with many request threads: a line is formatted by the
    thread that logs it and queued without a lock; one writer thread writes what gathered
    every FLUSH_INTERVAL seconds, in one write. A WARNING or worse is written at once, after
    the lines queued before it (order is kept). Measured on the manifest GET path (50
    clients, 2 × 32 threads): the stock handler's lock per line — taken, contended, and
    released with a wake-up while holding the GIL — was 11 % of the gateway's CPU.

    INFO lines of the last FLUSH_INTERVAL are lost if the process is killed (SIGKILL, a
    gunicorn timeout's abort); an exit flushes them (logging.shutdown)."""

    def __init__(self, stream: TextIO, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(stream)
        self.interval = interval
        self._lines: deque[str] = deque()
        self._writer_pid = 0  # the process whose writer thread runs (gunicorn forks)
        self._starting = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit without the handler's lock (emit needs none)."""
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return bool(passed)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:  # noqa: BLE001 - logging never raises into its caller
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or len(self._lines) > PENDING_MAX:
            self.flush()
        elif self._writer_pid != os.getpid():
            self._start_writer()

    def _start_writer(self) -> None:
        with self._starting:
            if self._writer_pid == os.getpid():
                return
            self._writer_pid = os.getpid()
            threading.Thread(target=self._write_every_interval, name="log-writer",
                             daemon=True).start()

    def _write_every_interval(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        """Write every queued line (in one write), then flush the stream."""
        with self.lock:  # type: ignore[union-attr]
            lines = []
            while self._lines:
                lines.append(self._lines.popleft())
            try:
                if lines:
                    self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # the stream is gone (closed at exit)
                pass


def setup_logging(fmt: str, batched: bool = False) -> None:
    """Configure the tagwarden logger tree for json or text output; `batched`: lines are
    written by a writer thread (the gateway: see BatchingHandler). RQ workers write each line
    at once: a work-horse ends with os._exit, which would drop queued lines."""
    handler = BatchingHandler(sys.stderr) if batched else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger("tagwarden")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def valid_request_id(value: str | None) -> bool:
    """An incoming X-Request-ID worth keeping: 1-128 printable ASCII characters."""
    return bool(value) and value is not None and len(value) <= 128 and value.isascii() \
        and value.isprintable()
