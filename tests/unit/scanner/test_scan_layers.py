"""Streaming layers: compressions, unsafe paths, links, truncation and decompression bombs."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import tarfile
import tracemalloc

import pytest
import zstandard

from service.scanner.errors import FileTooLarge, ScanError
from service.scanner.layers import iter_layer_files, normalize_path
from testkit import oci

pytestmark = pytest.mark.unit

MiB = 1024 * 1024
FILES = {"etc/os-release": "ID=debian\n", "usr/share/doc/readme": b"x" * 3000}


class ForwardOnly:
    """A non-seekable stream handing out small chunks, like an HTTP response body."""

    def __init__(self, data: bytes, chunk: int = 777) -> None:
        self._buf = io.BytesIO(data)
        self._chunk = chunk
        self.read_calls = 0

    def read(self, size: int = -1) -> bytes:
        self.read_calls += 1
        return self._buf.read(min(size if size >= 0 else self._chunk, self._chunk))


def raw_tar(entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A tar built without the oci helper's path checks (absolute, ``..``, hardlinks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def scan(data: bytes, *, max_bytes: int = 64 * MiB, **kw: int) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path, info, read in iter_layer_files(ForwardOnly(data), "x", max_bytes=max_bytes, **kw):
        out[path] = read() if info.isreg() else None
    return out


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_each_compression_is_detected_from_magic_bytes(compression: str) -> None:
    layer = oci.tar_layer(FILES, compression=compression, dirs=["etc"])
    seen = scan(layer.data)
    assert seen == {
        "etc": None,
        "etc/os-release": b"ID=debian\n",
        "usr/share/doc/readme": b"x" * 3000,
    }


def test_media_type_is_not_trusted() -> None:
    layer = oci.tar_layer(FILES, compression="zstd")
    entries = iter_layer_files(io.BytesIO(layer.data), oci.OCI_LAYER_GZIP, max_bytes=MiB)
    assert [path for path, _, _ in entries] == ["etc/os-release", "usr/share/doc/readme"]


def test_multi_frame_zstd_and_multi_member_gzip_are_read_whole() -> None:
    tar = oci.tar_layer(FILES, compression="none").data
    half = len(tar) // 2
    zst = zstandard.ZstdCompressor()
    assert scan(zst.compress(tar[:half]) + zst.compress(tar[half:]))["etc/os-release"] == (
        b"ID=debian\n"
    )
    assert scan(gzip.compress(tar[:half]) + gzip.compress(tar[half:]))["usr/share/doc/readme"] == (
        b"x" * 3000
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("./etc/passwd", "etc/passwd"),
        ("/etc/passwd", "etc/passwd"),
        ("//usr/./lib//x", "usr/lib/x"),
        ("./", None),
        ("../etc/passwd", None),
        ("usr/../../etc/passwd", None),
        ("a/b/..", None),
        ("..foo/bar", "..foo/bar"),
    ],
)
def test_normalize_path(name: str, expected: str | None) -> None:
    assert normalize_path(name) == expected


def test_dotdot_entries_are_skipped_and_absolute_paths_made_relative(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = raw_tar(
        [("../escape", b"evil"), ("/etc/abs", b"abs"), ("./rel", b"rel"), ("a/../../b", b"no")]
    )
    assert scan(data) == {"etc/abs": b"abs", "rel": b"rel"}
    assert list(tmp_path.iterdir()) == []  # nothing was written anywhere, not even here


def test_symlinks_and_hardlinks_are_listed_but_never_followed(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = raw_tar(
        [
            ("real", b"content"),
            link("soft", "/etc/shadow", tarfile.SYMTYPE),
            link("hard", "real", tarfile.LNKTYPE),
        ]
    )
    kinds = {}
    for path, info, read in iter_layer_files(io.BytesIO(data), "x", max_bytes=MiB):
        kinds[path] = info.type
        if not info.isreg():
            with pytest.raises(ScanError, match="not a regular file"):
                read()
    assert kinds == {"real": tarfile.REGTYPE, "soft": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}
    assert list(tmp_path.iterdir()) == []


def test_read_fn_is_only_valid_for_the_current_entry() -> None:
    layer = oci.tar_layer({"a": "1", "b": "2"}, compression="gzip")
    entries = iter_layer_files(io.BytesIO(layer.data), layer.media_type, max_bytes=MiB)
    _, _, read_a = next(entries)
    assert read_a() == b"1"
    with pytest.raises(ScanError, match="twice"):
        read_a()
    _, _, read_b = next(entries)
    with pytest.raises(ScanError, match="moved past"):
        read_a()
    assert read_b() == b"2"


def test_file_over_the_per_file_cap_raises_file_too_large() -> None:
    layer = oci.tar_layer({"big": b"y" * 5000, "small": b"s"}, compression="none")
    entries = iter_layer_files(io.BytesIO(layer.data), "x", max_bytes=MiB, max_file_bytes=4096)
    _, _, read_big = next(entries)
    with pytest.raises(FileTooLarge, match="big: 5000 bytes"):
        read_big()
    assert [(p, r()) for p, _, r in entries] == [("small", b"s")]


def test_decompression_bomb_stops_at_the_cap() -> None:
    bomb = oci.tar_layer({"zeros": bytes(64 * MiB)}, compression="gzip")
    assert len(bomb.data) < MiB
    with pytest.raises(ScanError, match=f"exceeds cap of {8 * MiB} bytes"):
        for _ in iter_layer_files(io.BytesIO(bomb.data), bomb.media_type, max_bytes=8 * MiB):
            pass


def test_a_large_layer_is_streamed_not_held_in_memory() -> None:
    layer = oci.tar_layer({"zeros": bytes(48 * MiB), "etc/os-release": "ID=alpine\n"})
    stream = ForwardOnly(layer.data, chunk=64 * 1024)
    tracemalloc.start()
    try:
        got = {
            p: r()
            for p, i, r in iter_layer_files(stream, "x", max_bytes=64 * MiB)
            if p == "etc/os-release"
        }
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == {"etc/os-release": b"ID=alpine\n"}
    assert peak < 4 * MiB
    assert stream.read() == b""  # the whole blob was consumed (a hashing caller sees it all)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "layer is empty"),
        (b"this is not a tar archive, just some text\n" * 40, "not a tar archive"),
        (os.urandom(2048), "not a tar archive"),
        (gzip.compress(b"plain text inside gzip\n" * 100), "not a tar archive"),
        (lzma.compress(b"xz"), "unsupported xz compression"),
        (b"BZh91AY&SY", "unsupported bzip2 compression"),
    ],
)
def test_non_tar_input_raises_scan_error(data: bytes, message: str) -> None:
    with pytest.raises(ScanError, match=message):
        list(iter_layer_files(io.BytesIO(data), oci.OCI_LAYER_GZIP, max_bytes=MiB))


def _truncations() -> list[tuple[str, bytes]]:
    big = {"a": os.urandom(20000), "b": b"tail"}
    plain = oci.tar_layer(big, compression="none").data
    gz = oci.tar_layer(big, compression="gzip").data
    zst = oci.tar_layer(big, compression="zstd").data
    end_marker_at = len(raw_tar([("a", big["a"]), ("b", b"tail")]).rstrip(b"\0")) // 512 * 512
    return [
        ("gzip cut in half", gz[: len(gz) // 2]),
        ("gzip without its trailer", gz[:-6]),
        ("zstd cut in half", zst[: len(zst) // 2]),
        ("plain cut inside file data", plain[:5000]),
        ("plain cut at a header boundary", plain[:512]),
        ("plain without end marker", plain[: end_marker_at + 512]),
    ]


@pytest.mark.parametrize(
    ("case", "data"), _truncations(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_truncated_layers_raise_scan_error(case: str, data: bytes) -> None:
    with pytest.raises(ScanError, match="truncated|corrupt"):
        scan(data)


def test_corrupt_gzip_crc_is_detected() -> None:
    data = bytearray(oci.tar_layer(FILES, compression="gzip").data)
    data[-6] ^= 0xFF  # inside the CRC32 trailer
    with pytest.raises(ScanError, match="CRC check failed"):
        scan(bytes(data))


def test_gzip_zero_padding_is_accepted_and_trailing_garbage_is_not() -> None:
    gz = oci.tar_layer(FILES, compression="gzip").data
    assert scan(gz + bytes(1024))["etc/os-release"] == b"ID=debian\n"
    with pytest.raises(ScanError, match="corrupt after the tar end marker"):
        scan(gz + b"garbage!")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_many_small_files_and_a_large_one_read_back_exactly(compression: str) -> None:
    files: dict[str, bytes | str] = {f"f/{i:04d}": os.urandom(i * 37 % 3000) for i in range(600)}
    files["big"] = os.urandom(3 * MiB + 123)
    layer = oci.tar_layer(files, compression=compression)
    assert scan(layer.data) == files


def test_an_oversized_pax_header_stops_the_scan_instead_of_being_read_into_memory() -> None:
    info = tarfile.TarInfo("a")
    info.pax_headers = {"comment": "x" * (8 * MiB)}
    layer = gzip.compress(raw_tar([info]), compresslevel=1)
    assert len(layer) < MiB
    with pytest.raises(ScanError, match="over the read cap"):
        scan(layer, max_file_bytes=2 * MiB)
