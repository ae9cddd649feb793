"""Reading an OSV export from disk: a directory of .json advisories and/or osv.dev's zip
archives, one member at a time (never extracted), each at most MAX_RECORD_BYTES."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 16 * 1024 * 1024


def osv_files(path: str | os.PathLike[str]) -> list[Path]:
    """The .json and .zip files an import would read; FileNotFoundError if there are none."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no OSV database at {root}")
    found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [p for p in found if p.suffix in (".json", ".zip")]
    if not files:
        raise FileNotFoundError(f"no .json or .zip OSV files under {root}")
    return files


def iter_osv_documents(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """Yield ``(source, parsed JSON or None)`` for every .json file and zip member under path."""
    for file in osv_files(path):
        if file.suffix == ".json":
            yield str(file), _load(file.read_bytes(), str(file), file.stat().st_size)
        elif file.suffix == ".zip":
            yield from _zip_documents(file)


def _zip_documents(file: Path) -> Iterator[tuple[str, Any]]:
    with zipfile.ZipFile(file) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            source = f"{file}!{info.filename}"
            if info.file_size > MAX_RECORD_BYTES:
                yield source, None
                continue
            with zf.open(info) as fh:  # one member at a time, never extracted to disk
                yield source, _load(fh.read(MAX_RECORD_BYTES + 1), source, info.file_size)


def _load(raw: bytes, source: str, size: int) -> Any:
    if size > MAX_RECORD_BYTES or len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        log.debug("not JSON: %s", source)
        return None


def read_osv(path: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """`iter_osv_documents`, after checking at once (before anything is imported) that the
    path holds OSV files: FileNotFoundError otherwise, so a wrong path never replaces the live
    database with an empty one."""
    osv_files(path)
    return iter_osv_documents(path)
