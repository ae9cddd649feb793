"""A gthread worker that does not let a slow client hold a thread forever.

gunicorn's gthread worker waits for a request's first byte off-thread, then reads the head
and body blocking with no time limit: a client dripping one byte a second pins a thread for
good (slowloris). Here every request must arrive within TAGWARDEN_REQUEST_READ_TIMEOUT
seconds (head and any small body), and no read or write may stall for longer than
TAGWARDEN_SOCKET_IDLE_TIMEOUT. Streamed /v2 uploads lift the first limit (they may
legitimately take hours) but keep the second, and must keep a minimum average rate
(TAGWARDEN_UPLOAD_MIN_RATE bytes/s over each RATE_WINDOW seconds).

Streamed uploads may also hold at most `threads - TAGWARDEN_RESERVED_THREADS` threads of a
process at once (issue 14: 80 uploads dripping a byte every 2 s held every thread, and
/healthz and the API stopped answering). One more is refused at once with 429
TOOMANYREQUESTS and its connection closed without draining the body, so health checks, the
API and downloads always find a thread. A buffering reverse proxy in front (nginx's
client_header_timeout / client_body_timeout) remains the stronger defence against request
heads dripped slowly, which still hold a thread for up to the request deadline.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
import time
import weakref
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from service.domain.errors import Busy

DEFAULT_READ_DEADLINE = 20.0
READ_DEADLINE = float(os.environ.get("TAGWARDEN_REQUEST_READ_TIMEOUT", DEFAULT_READ_DEADLINE))
IDLE_TIMEOUT = float(os.environ.get("TAGWARDEN_SOCKET_IDLE_TIMEOUT", "120"))
MIN_UPLOAD_RATE = float(os.environ.get("TAGWARDEN_UPLOAD_MIN_RATE", "1024"))
RATE_WINDOW = 30.0
_deadlines: weakref.WeakKeyDictionary[socket.socket, float] = weakref.WeakKeyDictionary()
# socket -> [window start, bytes received in the window], for streamed uploads only
_rates: weakref.WeakKeyDictionary[socket.socket, list[float]] = weakref.WeakKeyDictionary()
# socket -> the gunicorn request being handled on it (to close the connection on a refusal)
_requests: weakref.WeakKeyDictionary[socket.socket, Any] = weakref.WeakKeyDictionary()


def reserved_threads(threads: int) -> int:
    """Threads of a process streamed uploads may never take (TAGWARDEN_RESERVED_THREADS)."""
    raw = os.environ.get("TAGWARDEN_RESERVED_THREADS")
    reserved = int(raw) if raw else max(4, threads // 4)
    return min(max(reserved, 1), threads - 1)


class UploadSlots:
    """How many threads of this process stream an upload body right now, and the cap."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.holders: set[socket.socket] = set()
        self.refused: set[socket.socket] = set()
        self._lock = threading.Lock()

    def take(self, sock: socket.socket) -> bool:
        """Give `sock` a slot (idempotent); False, and remember the refusal, when full."""
        with self._lock:
            if sock in self.holders:
                return True
            if len(self.holders) >= self.limit:
                self.refused.add(sock)
                return False
            self.holders.add(sock)
            return True

    def give_back(self, sock: socket.socket) -> bool:
        """Free `sock`'s slot at the end of its request; True when it had been refused."""
        with self._lock:
            self.holders.discard(sock)
            if sock in self.refused:
                self.refused.discard(sock)
                return True
            return False


# Set by the worker process (DeadlineThreadWorker.init_process) from its thread count.
UPLOADS = UploadSlots(limit=1 << 30)


class DeadlineSocket(socket.socket):
    """A client socket whose blocking mode means: idle timeout plus a request deadline."""

    __slots__ = ()

    def setblocking(self, flag: bool) -> None:
        """gunicorn makes the socket blocking when a request starts: start the clock."""
        if flag:
            super().settimeout(IDLE_TIMEOUT)
            _deadlines[self] = time.monotonic() + READ_DEADLINE
        else:
            super().setblocking(False)
            _deadlines.pop(self, None)

    def _check(self) -> None:
        deadline = _deadlines.get(self)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("request not received within TAGWARDEN_REQUEST_READ_TIMEOUT")
        rate = _rates.get(self)
        if rate is not None and time.monotonic() - rate[0] >= RATE_WINDOW:
            if rate[1] < MIN_UPLOAD_RATE * RATE_WINDOW:
                raise TimeoutError("upload slower than TAGWARDEN_UPLOAD_MIN_RATE")
            rate[0], rate[1] = time.monotonic(), 0

    def _count(self, received: int) -> None:
        rate = _rates.get(self)
        if rate is not None:
            rate[1] += received

    def recv(self, *args: Any) -> bytes:
        """recv, refused once the request deadline has passed or the upload is too slow."""
        self._check()
        data = super().recv(*args)
        self._count(len(data))
        return data

    def recv_into(self, *args: Any) -> int:
        """recv_into, refused once the request deadline has passed or the upload is too slow."""
        self._check()
        received = super().recv_into(*args)
        self._count(received)
        return received

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        """Send a file's bytes (gunicorn's path for a `wsgi.file_wrapper`: blob GETs answered
        from the registry's storage) in blocking kernel calls, each sending as much as it can
        while the kernel sleeps on the socket, instead of socket.sendfile's poll-then-send
        loop of the timeout mode; the idle timeout still holds (SO_SNDTIMEO)."""
        timeout = self.gettimeout()
        fileno, total = file.fileno(), 0
        wanted = count if count is not None else os.fstat(fileno).st_size - offset
        super().settimeout(None)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", int(IDLE_TIMEOUT), 0))
        try:
            while total < wanted:
                try:
                    sent = os.sendfile(self.fileno(), fileno, offset + total,
                                       min(wanted - total, 1 << 30))
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                        raise TimeoutError("client stalled on a download") from None
                    raise
                if sent == 0:
                    break  # the file is shorter than it was
                total += sent
        finally:
            self.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 0, 0))
            super().settimeout(timeout)
        file.seek(offset + total)
        return total

    def lift_deadline(self) -> None:
        """A long streamed body is on its way: from now on the idle timeout and the minimum
        upload rate apply instead of the request deadline."""
        _deadlines.pop(self, None)
        _rates[self] = [time.monotonic(), 0.0]

    def end_request(self) -> None:
        """The request on this connection is over: a keep-alive one starts afresh."""
        _rates.pop(self, None)
        _requests.pop(self, None)


def lift_deadline(environ: dict[str, Any]) -> None:
    """Called by the /v2 proxy before streaming an upload body: take an upload slot (raise
    Busy, answered 429 and the connection closed, when this process has none left) and
    trade the request deadline for the idle timeout and minimum rate."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, DeadlineSocket):
        if not UPLOADS.take(sock):
            req = _requests.get(sock)
            if req is not None:
                req.must_close = True  # "Connection: close", and the body is not drained
            raise Busy("too many uploads in progress on this gateway process; retry later",
                       retry_after=1)
        sock.lift_deadline()


class DeadlineThreadWorker(ThreadWorker):
    """gthread with the deadlines and the upload cap above on every client socket."""

    def init_process(self) -> None:
        """Size this process's upload cap from its thread count, then run."""
        threads = self.cfg.threads
        UPLOADS.limit = threads - reserved_threads(threads)
        super().init_process()

    def handle_request(self, req: Any, conn: Any) -> bool:
        """Handle one request; free its upload slot after, and close when it was refused."""
        sock = conn.sock
        _requests[sock] = req
        try:
            keep_alive = super().handle_request(req, conn)
        finally:
            refused = UPLOADS.give_back(sock)
            if isinstance(sock, DeadlineSocket):
                sock.end_request()
            else:
                _requests.pop(sock, None)
        return bool(keep_alive) and not refused

    def enqueue_req(self, conn: Any) -> None:
        """Give the connection's socket the deadline behaviour before a thread reads it."""
        if type(conn.sock) is socket.socket:
            conn.sock.__class__ = DeadlineSocket
        super().enqueue_req(conn)
