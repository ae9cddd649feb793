"""A gthread worker that does not let a slow client hold a thread forever.

gunicorn's gthread worker waits for a request's first byte off-thread, then reads the head
and body blocking with no time limit: a client dripping one byte a second pins a thread for
good (slowloris). Here every request must arrive within TAGWARDEN_REQUEST_READ_TIMEOUT
seconds (head and any small body), and no read or write may stall for longer than
TAGWARDEN_SOCKET_IDLE_TIMEOUT. Streamed /v2 uploads lift the first limit (they may
legitimately take hours) but keep the second. A buffering reverse proxy in front (nginx's
client_header_timeout / client_body_timeout) remains the stronger defence against many slow
clients at once.
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

DEFAULT_READ_DEADLINE = 20.0
READ_DEADLINE = float(os.environ.get("TAGWARDEN_REQUEST_READ_TIMEOUT", DEFAULT_READ_DEADLINE))
IDLE_TIMEOUT = float(os.environ.get("TAGWARDEN_SOCKET_IDLE_TIMEOUT", "120"))
_deadlines: weakref.WeakKeyDictionary[socket.socket, float] = weakref.WeakKeyDictionary()


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

    def recv(self, *args: Any) -> bytes:
        """recv, refused once the request deadline has passed."""
        self._check()
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        """recv_into, refused once the request deadline has passed."""
        self._check()
        return super().recv_into(*args)

    def lift_deadline(self) -> None:
        """A long streamed body is on its way: only the idle timeout applies from now on."""
        _deadlines.pop(self, None)


def lift_deadline(environ: dict[str, Any]) -> None:
    """Called by the /v2 proxy before streaming an upload body."""
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, DeadlineSocket):
        sock.lift_deadline()


class DeadlineThreadWorker(ThreadWorker):
    """gthread with the deadlines above on every client socket."""

    def enqueue_req(self, conn: Any) -> None:
        """Give the connection's socket the deadline behaviour before a thread reads it."""
        if type(conn.sock) is socket.socket:
            conn.sock.__class__ = DeadlineSocket
        super().enqueue_req(conn)
