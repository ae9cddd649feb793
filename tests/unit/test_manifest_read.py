"""The gateway's own manifest reads (a promotion's source): from the cache only while the
registry's storage links the manifest in that repository, else from the registry, whose
answer is kept only when its bytes are the digest it names. A real storage tree under
tmp_path; the registry is a recording stand-in (its HTTP side is tested by the integration
suites)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from service.core.manifest_cache import ManifestCache, read
from service.registry.client import Manifest
from service.registry.storage import RegistryStorage

OCI = "application/vnd.oci.image.manifest.v1+json"
BODY = json.dumps({"schemaVersion": 2, "mediaType": OCI, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
REPO = "team/app"


class Registry:
    """Answers GET manifest as distribution does (headers included), and counts the GETs."""

    def __init__(self, digest_header: str = DIGEST) -> None:
        self.gets: list[str] = []
        self.digest_header = digest_header
        self.has = True

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        self.gets.append(reference)
        if not self.has:
            return None
        headers = (("Content-Type", OCI), ("Content-Length", str(len(BODY))),
                   ("Docker-Content-Digest", self.digest_header), ("Date", "now"),
                   ("Etag", f'"{DIGEST}"'))
        return Manifest(BODY, OCI, DIGEST, headers)


def _storage(tmp_path: Path) -> tuple[RegistryStorage, Path]:
    repo = tmp_path / "docker" / "registry" / "v2" / "repositories" / REPO / "_manifests"
    for rel in ("tags/v1/current/link", f"revisions/sha256/{DIGEST[7:]}/link"):
        (repo / rel).parent.mkdir(parents=True)
        (repo / rel).write_text(DIGEST)
    return RegistryStorage(str(tmp_path)), repo


def test_a_linked_manifest_is_read_once_from_the_registry_then_from_the_cache(tmp_path: Path):
    storage, _ = _storage(tmp_path)
    cache, registry = ManifestCache(1 << 20), Registry()
    first = read(storage, cache, registry, REPO, DIGEST)
    assert first is not None and first.body == BODY and registry.gets == [DIGEST]
    kept = cache.get(DIGEST)
    assert kept is not None and ("Date", "now") not in kept.headers  # a cached answer's own
    for reference in (DIGEST, "v1"):
        again = read(storage, cache, registry, REPO, reference)
        assert again is not None and (again.body, again.media_type, again.digest) == (
            BODY, OCI, DIGEST)
    assert registry.gets == [DIGEST]  # no registry round trip for either


def test_an_unlinked_manifest_is_asked_of_the_registry_whatever_the_cache_holds(tmp_path):
    storage, repo = _storage(tmp_path)
    cache, registry = ManifestCache(1 << 20), Registry()
    assert read(storage, cache, registry, REPO, DIGEST) is not None
    (repo / "revisions" / "sha256" / DIGEST[7:] / "link").unlink()  # deleted behind us
    registry.has = False
    assert read(storage, cache, registry, REPO, DIGEST) is None
    assert read(storage, cache, registry, REPO, "v1") is None  # the tag's target is gone too
    assert read(storage, cache, registry, "other/repo", DIGEST) is None  # another repository
    assert registry.gets == [DIGEST, DIGEST, "v1", DIGEST]


def test_an_answer_whose_bytes_are_not_its_digest_is_not_kept(tmp_path: Path):
    storage, _ = _storage(tmp_path)
    cache = ManifestCache(1 << 20)
    assert read(storage, cache, Registry(digest_header="sha256:" + "0" * 64), REPO,
                DIGEST) is not None
    assert cache.get(DIGEST) is None


def test_without_storage_access_every_read_asks_the_registry(tmp_path: Path):
    cache, registry = ManifestCache(1 << 20), Registry()
    for _ in range(2):
        assert read(None, cache, registry, REPO, DIGEST) is not None
    assert registry.gets == [DIGEST, DIGEST] and len(cache) == 0
