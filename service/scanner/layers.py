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

from service.scanner.errors import FileTooLarge, ScanError

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 16 * 1024 * 1024
_CHUNK = 1 << 20
_FEED = 256 << 10  # compressed bytes per zlib call
_BLOCK = 128 << 10  # decoded bytes buffered for tar headers and small files
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


class _Gunzip:
    """gzip members inflated by zlib itself (``wbits=31``: zlib checks each member's CRC and
    length as it goes). Hand-written because ``gzip.GzipFile`` costs ~37 % more CPU per byte
    (BENCHMARKS.md, Scan): it feeds zlib 8 KiB reads of raw deflate and runs a second crc32
    pass over the output. Output per call is bounded by ``size``, so a bomb never inflates
    past what was asked."""

    def __init__(self, src: Readable) -> None:
        self._src = src
        self._inflate = zlib.decompressobj(wbits=31)
        self._input = memoryview(b"")
        self._at = 0
        self._started = False  # the current member has been fed input

    def read(self, size: int) -> bytes:
        """Up to ``size`` decompressed bytes (at least one unless the stream ended)."""
        while True:
            if self._at == len(self._input) and not self._refill():
                return b""
            if not self._started:
                # gzip.GzipFile accepts zero padding between and after members; so do we
                rest = bytes(self._input[self._at :]).lstrip(b"\0")
                self._input, self._at = memoryview(rest), 0
                if not rest:
                    continue
                self._started = True
            # feed at most _FEED bytes: what zlib leaves unconsumed is copied out each call
            piece = self._input[self._at : self._at + _FEED]
            try:
                data = self._inflate.decompress(piece, size)
            except zlib.error as exc:
                raise _gzip_error(exc) from exc
            if self._inflate.eof:
                self._at += len(piece) - len(self._inflate.unused_data)
                self._inflate, self._started = zlib.decompressobj(wbits=31), False
            else:
                self._at += len(piece) - len(self._inflate.unconsumed_tail)
            if data:
                return data

    def _refill(self) -> bool:
        chunk = self._src.read(_CHUNK)
        if not chunk and self._started:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        self._input, self._at = memoryview(chunk), 0
        return bool(chunk)


def _gzip_error(exc: zlib.error) -> Exception:
    # zlib's words for a bad member trailer, said the way gzip.GzipFile says them
    if "incorrect data check" in str(exc):
        return gzip.BadGzipFile(f"CRC check failed ({exc})")
    if "incorrect length check" in str(exc):
        return gzip.BadGzipFile(f"Incorrect length of data produced ({exc})")
    return exc


class _Forward:
    """The decompressed layer as a forward-only file for tarfile (opened ``r:``, not ``r|``).

    tarfile reads headers and the files asked for, and *seeks* over every other file, which
    decodes it in 1 MiB pieces that are dropped at once, instead of copying it three times
    through tarfile's stream buffer. Stops a decompression bomb at ``cap`` decoded bytes, and
    any single read over ``max_read``: tarfile reads a whole pax or GNU long-name header at
    once, whatever size the archive claims for it."""

    def __init__(
        self, decode: Callable[[int], bytes], cap: int, compressed: bool, max_read: int
    ) -> None:
        self._decode = decode
        self.cap = cap
        self.max_read = max(max_read, _CHUNK)
        self.total = 0
        self.compressed = compressed
        self._buf = b""
        self._at = 0
        self._pos = 0

    def _pull(self, size: int) -> bytes:
        data = self._decode(min(size, self.cap - self.total + 1))
        self.total += len(data)
        if self.total > self.cap:
            raise ScanError(f"decompressed layer exceeds cap of {self.cap} bytes")
        return data

    def tell(self) -> int:
        """Bytes of decompressed tar consumed so far."""
        return self._pos

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes, fewer only at the end of the layer."""
        if size is None or size < 0:
            size = _CHUNK
        if size > self.max_read:
            raise ScanError(f"layer has a tar header or file of {size} bytes, over the read cap")
        parts: list[bytes] = []
        want = size
        while want > 0:
            if self._at == len(self._buf):
                if want >= _BLOCK:  # large reads skip the buffer
                    data = self._pull(want)
                    if not data:
                        break
                    parts.append(data)
                    want -= len(data)
                    continue
                self._buf, self._at = self._pull(_BLOCK), 0  # headers and small files
                if not self._buf:
                    break
            piece = self._buf[self._at : self._at + want]
            self._at += len(piece)
            parts.append(piece)
            want -= len(piece)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        """Skip forward to ``pos`` (or to the end of the layer, if that comes first)."""
        if whence != 0 or pos < self._pos:
            raise tarfile.StreamError("seeking backwards is not allowed")
        held = min(pos - self._pos, len(self._buf) - self._at)
        self._at += held
        self._pos += held
        while self._pos < pos:
            data = self._pull(min(pos - self._pos, _CHUNK))
            if not data:
                break
            self._pos += len(data)
        return self._pos


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


def _decompressed(stream: Readable, media_type: str, cap: int, max_read: int) -> _Forward:
    head = _read_head(stream, 6)
    if not head:
        raise ScanError(f"layer is empty (media type {media_type})")
    src = _Prefixed(head, stream)
    if head.startswith(_GZIP):
        return _Forward(_Gunzip(src).read, cap, True, max_read)
    if head.startswith(_ZSTD):
        zst = zstandard.ZstdDecompressor().stream_reader(
            src, read_across_frames=True, closefd=False
        )
        return _Forward(zst.read, cap, True, max_read)
    for magic, name in _UNSUPPORTED.items():
        if head.startswith(magic):
            raise ScanError(f"layer uses unsupported {name} compression (media type {media_type})")
    return _Forward(src.read, cap, False, max_read)


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


def _open(layer: _Forward, media_type: str, state: dict[str, str]) -> tarfile.TarFile:
    try:
        # "r:" on a forward-only file: tarfile seeks over file contents, never back
        return tarfile.open(fileobj=cast(Any, layer), mode="r:", tarinfo=_tarinfo_class(state))
    except tarfile.ReadError as exc:
        if "unexpected end" in str(exc):
            raise ScanError(f"layer is truncated: {exc}") from exc
        if layer.total == 0 and layer.compressed:
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


def _finish(layer: _Forward, state: dict[str, str]) -> None:
    end = state.get("end")
    if end != "marker":
        raise ScanError(
            f"layer is truncated or corrupt: archive ended without its end marker "
            f"({end or 'no more data'})"
        )
    # Drain the padding: gzip checks its CRC only at the end, and a caller hashing the
    # compressed stream needs every byte read.
    with _translated("layer is corrupt after the tar end marker"):
        while layer.read(_CHUNK):
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
        layer = _decompressed(stream, media_type, max_bytes, max_file_bytes)
        tf = _open(layer, media_type, state)
    cursor = _Cursor()
    while True:
        with _translated("layer is truncated or corrupt"):
            member = tf.next()
        cursor.advance()
        if member is None:
            break
        # tarfile appends every TarInfo to `members`; a layer of 100k files would
        # keep them all. Nothing reads `members` here (links are never resolved).
        cast(Any, tf).members.clear()
        path = normalize_path(member.name)
        if path is None:
            log.debug("skipping unsafe layer path %r", member.name)
            continue
        yield path, member, _reader(tf, member, path, max_file_bytes, cursor)
    _finish(layer, state)
