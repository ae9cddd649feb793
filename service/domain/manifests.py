"""What a manifest references: pure reading of its parsed JSON."""

from __future__ import annotations

from typing import Any

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")


def _digests(items: Any) -> list[str]:
    if not isinstance(items, list):
        return []
    return [d["digest"] for d in items
            if isinstance(d, dict) and isinstance(d.get("digest"), str)]


def references(parsed: Any, media_type: str) -> dict[str, Any]:
    """{"index": bool, "children": [manifest digests], "blobs": [config and layer digests]}."""
    if not isinstance(parsed, dict):
        return {"index": False, "children": [], "blobs": []}
    if media_type in INDEX_TYPES or "manifests" in parsed:
        return {"index": True, "children": _digests(parsed.get("manifests")), "blobs": []}
    config = parsed.get("config")
    return {"index": False, "children": [],
            "blobs": _digests([config] if config else []) + _digests(parsed.get("layers"))}
