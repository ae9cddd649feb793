"""The referrers API of OCI 1.1 on top of distribution 2.8: index, answer, forget."""

from __future__ import annotations

import logging
from typing import Any

from service.domain.referrers import SUBJECT_TYPES, referrer_of, referrers_index
from service.services import Services

log = logging.getLogger("tagwarden.referrers")


def index_pushed(svc: Services, repository: str, digest: str, body: bytes,
                 media_type: str) -> str | None:
    """Index a manifest the registry just stored; the subject it names, or None."""
    found = referrer_of(body, media_type, digest)
    if found is None:
        if media_type in SUBJECT_TYPES:
            svc.referrers.mark_plain(repository, digest)
        return None
    subject, descriptor = found
    svc.referrers.add(repository, subject, descriptor)
    return subject


def index_from_registry(svc: Services, repository: str, digest: str) -> str | None:
    """Index a manifest pushed behind the gateway's back (its notification named it): read
    from the registry, so a forged event indexes nothing the registry does not hold."""
    if svc.referrers.known(repository, digest):
        return None
    manifest = svc.registry.get_manifest(repository, digest)
    if manifest is None or manifest.digest != digest:
        return None
    return index_pushed(svc, repository, digest, manifest.body, manifest.media_type)


def listing(svc: Services, repository: str, subject: str, artifact_type: str | None
            ) -> dict[str, Any]:
    """The image index of the referrers of `subject` (empty when there are none)."""
    return referrers_index(svc.referrers.referrers(repository, subject), artifact_type)


def artifact_types(svc: Services, repository: str, subject: str) -> set[str]:
    """The artifact types attached to a digest (for the `referrers` promotion gate)."""
    return {d["artifactType"] for d in svc.referrers.referrers(repository, subject)
            if d.get("artifactType")}


def forget(svc: Services, repository: str, digest: str) -> None:
    """A manifest was deleted: it refers to nothing any more."""
    svc.referrers.remove(repository, digest)
