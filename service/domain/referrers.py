"""OCI 1.1 referrers: what a manifest's `subject` makes it, read from its bytes (pure)."""

from __future__ import annotations

import json
import re
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SUBJECT_TYPES = (OCI_MANIFEST, OCI_INDEX)  # the manifest types that carry a `subject`
DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/"
                           r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


def may_refer(body: bytes, media_type: str) -> bool:
    """Cheap pre-check before parsing: only OCI manifests and indexes naming a subject."""
    return media_type in SUBJECT_TYPES and b'"subject"' in body


def referrer_of(body: bytes, media_type: str, digest: str) -> tuple[str, dict[str, Any]] | None:
    """(subject digest, the descriptor the referrers API lists) of a manifest that has a
    `subject`, else None. The artifact type is the manifest's `artifactType`, else (for an
    image manifest) its config's media type."""
    if not may_refer(body, media_type):
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("subject"), dict):
        return None
    subject = parsed["subject"].get("digest")
    if not isinstance(subject, str) or not DIGEST_RE.match(subject):
        return None
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
    artifact_type = parsed.get("artifactType")
    config = parsed.get("config")
    if not artifact_type and media_type == OCI_MANIFEST and isinstance(config, dict):
        artifact_type = config.get("mediaType")
    if isinstance(artifact_type, str) and MEDIA_TYPE_RE.match(artifact_type):
        descriptor["artifactType"] = artifact_type
    annotations = parsed.get("annotations")
    if isinstance(annotations, dict) and annotations and all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        descriptor["annotations"] = annotations
    return subject, descriptor


def referrers_index(descriptors: list[dict[str, Any]], artifact_type: str | None = None
                    ) -> dict[str, Any]:
    """The OCI image index the referrers API answers, filtered by artifact type when asked."""
    chosen = [d for d in descriptors
              if artifact_type is None or d.get("artifactType") == artifact_type]
    chosen.sort(key=lambda d: d["digest"])
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": chosen}
