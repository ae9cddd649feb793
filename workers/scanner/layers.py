"""Stream a layer blob as tar entries: forward only, never held whole in memory or on disk."""

from __future__ import annotations

import gzip
import logging
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, Self, cast

import zstandard

from workers.scanner.errors import FileTooLarge, ScanError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_UNSUPPORTED = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
# Decoder failures that mean "this blob is not what it claims"; transport errors from the
# caller's stream (sockets, HTTP) are deliberately not listed so they keep their own type.
# tarfile's exception for an all-zero block (the end-of-archive marker); in CPython since
# 3.2 but missing from typeshed.
_END_MARKER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_DECODE_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zstandard.ZstdError, tarfile.TarError)

ReadFn = Callable[[], bytes]
LayerEntry = tuple[str, tarfile.TarInfo, ReadFn]


class Readable(Protocol):
    """Anything with a forward-only ``read(size)`` (a file, an HTTP response body)."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Prefixed:
    """Replays the magic bytes we peeked at, then reads on from the underlying stream."""

    def __init__(self, head: bytes, raw: Readable) -> None:
        self._head = head
        self._raw = raw

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw.read(size)


class _Capped:
    """Counts decompressed bytes and stops a decompression bomb at ``cap``."""

    def __init__(self, raw: Any, cap: int) -> None:
        self._raw = raw
        self.cap = cap
        self.total = 0
        self.compressed = not isinstance(raw, _Prefixed)  # gzip or zstd in between

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        data = self._raw.read(min(size, self.cap - self.total + 1))
        self.total += len(data)
        if self.total > self.cap:
            raise ScanError(f"decompressed layer exceeds cap of {self.cap} bytes")
        return data


def normalize_path(name: str) -> str | None:
    """A tar member name as a relative path (no ``./``, no leading ``/``); None if unsafe."""
    parts = [seg for seg in name.split("/") if seg not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _read_head(stream: Readable, n: int) -> bytes:
    head = b""
    while len(head) < n:
        chunk = stream.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _decompressed(stream: Readable, media_type: str) -> Any:
    head = _read_head(stream, 6)
    if not head:
        raise ScanError(f"layer is empty (media type {media_type})")
    src: Any = _Prefixed(head, stream)
    if head.startswith(_GZIP):
        return gzip.GzipFile(fileobj=src, mode="rb")
    if head.startswith(_ZSTD):
        return zstandard.ZstdDecompressor().stream_reader(
            src, read_across_frames=True, closefd=False
        )
    for magic, name in _UNSUPPORTED.items():
        if head.startswith(magic):
            raise ScanError(f"layer uses unsupported {name} compression (media type {media_type})")
    return src


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except _DECODE_ERRORS as exc:
        raise ScanError(f"{what}: {exc}") from exc


def _tarinfo_class(state: dict[str, str]) -> type[tarfile.TarInfo]:
    """A TarInfo that remembers why the archive ended (tarfile treats several as plain EOF)."""

    class _Info(tarfile.TarInfo):
        @classmethod
        def fromtarfile(cls, tf: tarfile.TarFile) -> Self:
            try:
                return super().fromtarfile(tf)
            except _END_MARKER:
                state["end"] = "marker"
                raise
            except tarfile.HeaderError as exc:
                state["end"] = str(exc) or type(exc).__name__
                raise

    return _Info


def _open(capped: _Capped, media_type: str, state: dict[str, str]) -> tarfile.TarFile:
    try:
        # 256 KiB reads: skipping a large file in stream mode otherwise costs a Python call per
        # 10 KiB record through the decompressor and the cap
        return tarfile.open(fileobj=cast(Any, capped), mode="r|", tarinfo=_tarinfo_class(state),
                            bufsize=256 << 10)
    except tarfile.ReadError as exc:
        if "unexpected end" in str(exc):
            raise ScanError(f"layer is truncated: {exc}") from exc
        if capped.total == 0 and capped.compressed:
            raise ScanError(
                f"layer is truncated or empty: it decompresses to no data (media type {media_type})"
            ) from exc
        raise ScanError(f"layer is not a tar archive (media type {media_type}): {exc}") from exc


class _Cursor:
    """Which entry the stream is on, so a stale or repeated ``read_fn`` fails loudly."""

    def __init__(self) -> None:
        self.index = 0
        self.consumed = False

    def advance(self) -> None:
        self.index += 1
        self.consumed = False


def _reader(
    tf: tarfile.TarFile, member: tarfile.TarInfo, path: str, max_file_bytes: int, cursor: _Cursor
) -> ReadFn:
    at = cursor.index

    def read() -> bytes:
        if cursor.index != at or cursor.consumed:
            raise ScanError(f"{path}: read after the layer stream moved past it (or twice)")
        if not member.isreg():
            raise ScanError(f"{path}: not a regular file (links are never followed)")
        if member.size > max_file_bytes:
            raise FileTooLarge(f"{path}: {member.size} bytes is over the {max_file_bytes} cap")
        cursor.consumed = True
        with _translated(f"layer is truncated or corrupt in {path}"):
            fh = tf.extractfile(member)
            return fh.read() if fh is not None else b""

    return read


def _finish(capped: _Capped, state: dict[str, str]) -> None:
    end = state.get("end")
    if end != "marker":
        raise ScanError(
            f"layer is truncated or corrupt: archive ended without its end marker "
            f"({end or 'no more data'})"
        )
    # Drain the padding: gzip checks its CRC only at the end, and a caller hashing the
    # compressed stream needs every byte read.
    with _translated("layer is corrupt after the tar end marker"):
        while capped.read(_CHUNK):
            pass


def iter_layer_files(
    stream: Readable,
    media_type: str,
    *,
    max_bytes: int,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> Iterator[LayerEntry]:
    """Yield ``(path, TarInfo, read_fn)`` per safe entry of a gzip/zstd/plain tar layer stream.

    ``read_fn()`` returns a regular file's bytes; it works only until the next entry is
    requested, and raises `FileTooLarge` past ``max_file_bytes``. Entries whose path has a
    ``..`` component are skipped. Every failure to decode the layer raises `ScanError`.
    """
    state: dict[str, str] = {}
    with _translated(f"layer is truncated or not validly compressed (media type {media_type})"):
        capped = _Capped(_decompressed(stream, media_type), max_bytes)
        tf = _open(capped, media_type, state)
    cursor = _Cursor()
    while True:
        with _translated("layer is truncated or corrupt"):
            member = tf.next()
        cursor.advance()
        if member is None:
            break
        # Stream mode still appends every TarInfo to `members`; a layer of 100k files would
        # keep them all. Nothing reads `members` here (links are never resolved).
        cast(Any, tf).members.clear()
        path = normalize_path(member.name)
        if path is None:
            log.debug("skipping unsafe layer path %r", member.name)
            continue
        yield path, member, _reader(tf, member, path, max_file_bytes, cursor)
    _finish(capped, state)
