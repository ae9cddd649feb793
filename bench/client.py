"""A lean HTTP/1.1 client for the benchmarks: raw keep-alive sockets, 1 MiB `recv_into` for
downloads (nothing kept), one `sendall` per 1 MiB chunk for uploads, so the client costs as
little CPU as Python allows (it shares the 2 cores with the servers it measures)."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

MIB = 1024 * 1024
CHUNK = MIB


def basic(token: str, user: str = "bench") -> str:
    """The /v2 Authorization header value (any user, the token as password)."""
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def bearer(token: str) -> str:
    """The /api/v1 Authorization header value."""
    return f"Bearer {token}"


class Headers(dict):
    """Response headers, case-insensitive (keys stored lower-case)."""

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(str(name).lower())


class Closed(ConnectionError):
    """The server closed the connection before answering."""


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port over a raw socket: the request
    head is one sendall, the response head is parsed by hand, bodies are read with recv_into.
    Several times cheaper per request than http.client, which matters because the client
    shares the machine's 2 cores with the servers it measures."""

    def __init__(self, port: int, auth: str | None = None, timeout: float = 300.0) -> None:
        self.port = port
        self.auth = auth
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.host = f"Host: 127.0.0.1:{port}\r\n".encode()
        self.auth_line = f"Authorization: {auth}\r\n".encode() if auth else b""

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buf = bytearray()
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _head(self, method: str, path: str, headers: dict[str, str] | None,
              length: int | None, chunked: bool = False) -> bytes:
        parts = [f"{method} {path} HTTP/1.1\r\n".encode(), self.host]
        if self.auth_line and not (headers and "Authorization" in headers):
            parts.append(self.auth_line)
        for name, value in (headers or {}).items():
            parts.append(f"{name}: {value}\r\n".encode("latin-1"))
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif length is not None and not (headers and "Content-Length" in headers):
            parts.append(b"Content-Length: %d\r\n" % length)
        parts.append(b"\r\n")
        return b"".join(parts)

    def _fill(self, sock: socket.socket) -> None:
        data = sock.recv(262144)
        if not data:
            raise Closed("connection closed by the server")
        self.buf += data

    def _read_head(self, sock: socket.socket) -> tuple[int, Headers]:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            self._fill(sock)
        lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[:end + 4]
        status = int(lines[0].split(" ", 2)[1])
        headers = Headers()
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:  # e.g. 100 Continue: the real answer follows
            return self._read_head(sock)
        return status, headers

    def _read_exact(self, sock: socket.socket, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill(sock)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def _read_body(self, sock: socket.socket, method: str, status: int, headers: Headers
                   ) -> bytes:
        if method == "HEAD" or status in (204, 304):
            return b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            out = bytearray()
            while True:
                while b"\r\n" not in self.buf:
                    self._fill(sock)
                line, _, _ = bytes(self.buf).partition(b"\r\n")
                del self.buf[:len(line) + 2]
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self._read_exact(sock, 2)
                    return bytes(out)
                out += self._read_exact(sock, size)
                self._read_exact(sock, 2)
        length = headers.get("content-length")
        if length is not None:
            return self._read_exact(sock, int(length))
        out = bytearray(self.buf)  # no length: until the server closes
        self.buf = bytearray()
        while data := sock.recv(262144):
            out += data
        self.close()
        return bytes(out)

    def _finish(self, headers: Headers) -> None:
        if headers.get("connection", "").lower() == "close":
            self.close()

    # -- requests --------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Headers, bytes]:
        """Send a request with a small body; (status, headers, body). A keep-alive connection
        the server closed meanwhile is reopened and the request sent again."""
        head = self._head(method, path, headers, len(body) if body is not None else (
            0 if method in ("POST", "PUT", "PATCH") else None))
        for attempt in (0, 1):
            fresh = self.sock is None
            sock = self.sock or self._connect()
            try:
                sock.sendall(head + body if body else head)
                status, hdrs = self._read_head(sock)
            except (Closed, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt or fresh:
                    raise
                continue
            data = self._read_body(sock, method, status, hdrs)
            self._finish(hdrs)
            return status, hdrs, data
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, payload: Any = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """A JSON API call; (status, decoded body or None)."""
        hdrs = dict(headers or {})
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            hdrs["Content-Type"] = "application/json"
        status, _, data = self.request(method, path, body, hdrs)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data

    def download(self, path: str, bufsize: int = CHUNK) -> int:
        """GET a blob, receiving it with recv_into into one reused 1 MiB buffer (nothing kept);
        bytes received."""
        sock = self.sock or self._connect()
        sock.sendall(self._head("GET", path, None, None))
        status, headers = self._read_head(sock)
        if status != 200:
            body = self._read_body(sock, "GET", status, headers)
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
        if "content-length" not in headers:
            return len(self._read_body(sock, "GET", status, headers))
        length = int(headers["content-length"])
        have = min(len(self.buf), length)
        del self.buf[:have]
        view = memoryview(bytearray(bufsize))
        recv_into = sock.recv_into
        while have < length:
            n = recv_into(view, min(bufsize, length - have))
            if not n:
                raise Closed(f"connection closed after {have} of {length} bytes")
            have += n
        self._finish(headers)
        return have

    def iter_get(self, path: str, bufsize: int = CHUNK) -> Iterator[memoryview]:
        """GET and yield the body in pieces of up to `bufsize` (views of one reused buffer:
        use each before asking for the next)."""
        sock = self.sock or self._connect()
        sock.sendall(self._head("GET", path, None, None))
        status, headers = self._read_head(sock)
        if status != 200 or "content-length" not in headers:
            body = self._read_body(sock, "GET", status, headers)
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
        length = int(headers["content-length"])
        first = bytes(self.buf[:length])
        del self.buf[:len(first)]
        have = len(first)
        if first:
            yield memoryview(first)
        buf = bytearray(bufsize)
        view = memoryview(buf)
        while have < length:
            n = sock.recv_into(view, min(bufsize, length - have))
            if not n:
                raise Closed(f"connection closed after {have} of {length} bytes")
            have += n
            yield view[:n]
        self._finish(headers)

    def stream_upload(self, method: str, path: str, chunks: Iterable[bytes],
                      headers: dict[str, str] | None = None) -> tuple[int, Headers, bytes]:
        """Send a body with Transfer-Encoding: chunked, one sendall per piece (as docker does)."""
        sock = self.sock or self._connect()
        sock.sendall(self._head(method, path, headers, None, chunked=True))
        for chunk in chunks:
            sock.sendall(b"%x\r\n" % len(chunk))
            sock.sendall(chunk)
            sock.sendall(b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        status, hdrs = self._read_head(sock)
        data = self._read_body(sock, method, status, hdrs)
        self._finish(hdrs)
        return status, hdrs, data


# -- deterministic, incompressible-enough blob content ---------------------------------------
def chunks(seed: str, size: int, chunk: int = CHUNK) -> Iterator[bytes]:
    """`size` bytes in `chunk` pieces; each piece differs (a counter in front of a seeded
    block), so nothing upstream can deduplicate it; cheap to generate again and again."""
    block = (hashlib.sha256(seed.encode()).digest() * (chunk // 32 + 1))[:chunk]
    sent = 0
    counter = 0
    while sent < size:
        n = min(chunk, size - sent)
        piece = counter.to_bytes(8, "big") + block[8:n] if n >= 8 else block[:n]
        counter += 1
        sent += n
        yield piece


def digest_of(seed: str, size: int) -> str:
    """The sha256 digest of `chunks(seed, size)` (computed before anything is timed)."""
    h = hashlib.sha256()
    for piece in chunks(seed, size):
        h.update(piece)
    return "sha256:" + h.hexdigest()


def path_of(location: str) -> str:
    """Path and query of a Location header (absolute or not)."""
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def push_blob(http_: Http, repository: str, seed: str, size: int, digest: str) -> float:
    """POST + chunked PATCH (streamed 1 MiB at a time) + PUT ?digest=; seconds taken."""
    return upload(http_, repository, chunks(seed, size), digest)


def upload(http_: Http, repository: str, pieces: Iterable[bytes], digest: str) -> float:
    """POST + one chunked PATCH streaming `pieces` + PUT ?digest=; seconds taken."""
    started = time.perf_counter()
    status, headers, body = http_.request("POST", f"/v2/{repository}/blobs/uploads/",
                                          headers={"Content-Length": "0"})
    if status != 202:
        raise RuntimeError(f"upload start answered {status}: {body[:300]!r}")
    location = path_of(headers["Location"])
    status, headers, body = http_.stream_upload(
        "PATCH", location, pieces, headers={"Content-Type": "application/octet-stream"})
    if status != 202:
        raise RuntimeError(f"PATCH answered {status}: {body[:300]!r}")
    location = path_of(headers["Location"])
    sep = "&" if "?" in location else "?"
    status, _, body = http_.request("PUT", f"{location}{sep}digest={digest}",
                                    headers={"Content-Length": "0"})
    if status != 201:
        raise RuntimeError(f"PUT answered {status}: {body[:300]!r}")
    return time.perf_counter() - started


def put_small_blob(http_: Http, repository: str, data: bytes) -> str:
    """Monolithic upload of a small blob (POST then PUT with the body); its digest."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, body = http_.request("POST", f"/v2/{repository}/blobs/uploads/",
                                          headers={"Content-Length": "0"})
    if status != 202:
        raise RuntimeError(f"upload start answered {status}: {body[:300]!r}")
    location = path_of(headers["Location"])
    sep = "&" if "?" in location else "?"
    status, _, body = http_.request("PUT", f"{location}{sep}digest={digest}", body=data,
                                    headers={"Content-Type": "application/octet-stream"})
    if status != 201:
        raise RuntimeError(f"blob PUT answered {status}: {body[:300]!r}")
    return digest
