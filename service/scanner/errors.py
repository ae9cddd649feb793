"""Errors the scanner raises on purpose."""

from __future__ import annotations


class ScanError(Exception):
    """A layer could not be scanned (not a tar, truncated, over a cap, ...); fails the scan."""


class FileTooLarge(ScanError):
    """One file inside a layer is over the per-file read cap; the inventory skips it."""
