"""`tagwarden gc`: the registry's own garbage collection, and the bytes it reclaimed on disk.

Retention deletes manifests through the registry API; their blobs stay on disk until the
registry's garbage collector removes what no manifest references any more. distribution's
collector must run while the registry is stopped or read-only
(`storage.maintenance.readonly.enabled: true`): a push racing it can lose blobs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml


class GCError(Exception):
    """The collector could not run (bad config, missing binary, non-zero exit)."""


def storage_root(config: Path) -> Path:
    """The filesystem storage root a registry config names (`storage.filesystem.rootdirectory`)."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise GCError(f"cannot read registry config {config}: {exc}") from None
    try:
        root = data["storage"]["filesystem"]["rootdirectory"]
    except (TypeError, KeyError):
        raise GCError(f"{config} has no storage.filesystem.rootdirectory: only the "
                      "filesystem driver's disk usage can be measured") from None
    return Path(root)


def disk_bytes(root: Path) -> int:
    """The bytes of every file under the storage root (what the collector can shrink)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue  # removed while walking
    return total


def collect(config: Path, binary: str = "docker-registry", dry_run: bool = False,
            timeout: float = 3600.0) -> dict[str, Any]:
    """Run `<binary> garbage-collect [--dry-run] <config>`; the bytes on disk before and after."""
    root = storage_root(config)
    exe = shutil.which(binary)
    if exe is None:
        raise GCError(f"{binary!r} not found on PATH")
    before = disk_bytes(root)
    argv = [exe, "garbage-collect", *(["--dry-run"] if dry_run else []), str(config)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise GCError(f"garbage collection did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise GCError(f"garbage-collect exited with {done.returncode}: " + " | ".join(tail))
    after = disk_bytes(root)
    marked = sum(1 for line in done.stdout.splitlines() if "blob eligible for deletion" in line)
    return {"storage": str(root), "dry_run": dry_run, "bytes_before": before,
            "bytes_after": after, "bytes_reclaimed": before - after,
            "blobs_eligible": marked}
