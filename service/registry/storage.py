"""Read-only access to the registry's filesystem storage (TAGWARDEN_REGISTRY_STORAGE).

When the gateway can read distribution's `rootdirectory` (same host, or the storage volume
mounted read-only), it answers what it may from there instead of asking the registry:
whether a blob or manifest is linked in a repository (the same link files distribution
reads: `_layers/sha256/<hex>/link`, `_manifests/revisions/sha256/<hex>/link`), which digest
a tag names now (`_manifests/tags/<tag>/current/link`), and the blob file itself for
`sendfile`. Every path is built from values the route parser already validated (repository
grammar, `sha256:<64 hex>`, tag grammar), must resolve inside the root without a symlink on
the way (the registry never writes one), and a link is believed only when it holds exactly
the digest asked for. Anything unexpected answers None: the caller then asks the registry,
as it would without storage access.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from typing import BinaryIO

log = logging.getLogger("tagwarden.storage")

SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
LINK_MAX = 128  # a link file holds one digest (`sha256:` + 64 hex, maybe a newline)
V2 = ("docker", "registry", "v2")


class RegistryStorage:
    """The registry's filesystem storage, read only and never trusted beyond its root."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.v2 = os.path.join(self.root, *V2)

    @classmethod
    def open(cls, root: str) -> RegistryStorage | None:
        """The storage at `root` (None when not configured). A root that cannot be read now
        is only warned about: the registry may create it with its first push, and every
        request that finds nothing readable is answered through the registry anyway."""
        if not root:
            return None
        if not (os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK)):
            log.warning("TAGWARDEN_REGISTRY_STORAGE=%s is not a readable directory (yet); "
                        "until it is, blobs and manifests are served through the registry",
                        root)
        return cls(root)

    # -- paths -------------------------------------------------------------------------------
    def _inside(self, path: str) -> bool:
        """`path` names itself inside the root, with no symlink (or `..`) anywhere on the way."""
        return os.path.realpath(path) == path and path.startswith(self.v2 + os.sep)

    def _repo(self, repository: str, *parts: str) -> str:
        return os.path.join(self.v2, "repositories", *repository.split("/"), *parts)

    def blob_path(self, digest: str) -> str:
        """Where distribution keeps a blob's bytes."""
        hex_ = digest[7:]
        return os.path.join(self.v2, "blobs", "sha256", hex_[:2], hex_, "data")

    # -- links -------------------------------------------------------------------------------
    def _read_link(self, path: str) -> str | None:
        if not self._inside(path):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            value = os.read(fd, LINK_MAX + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        if len(value) > LINK_MAX:
            return None
        text = value.decode("ascii", "replace").strip()
        return text if SHA256_RE.match(text) else None

    def blob_linked(self, repository: str, digest: str) -> bool:
        """Is the blob a layer of this repository (what distribution checks for a blob GET)?"""
        if not SHA256_RE.match(digest):
            return False
        link = self._repo(repository, "_layers", "sha256", digest[7:], "link")
        return self._read_link(link) == digest

    def manifest_linked(self, repository: str, digest: str) -> bool:
        """Is the manifest a revision of this repository (what a GET by digest checks)?"""
        if not SHA256_RE.match(digest):
            return False
        link = self._repo(repository, "_manifests", "revisions", "sha256", digest[7:], "link")
        return self._read_link(link) == digest

    def tag_digest(self, repository: str, tag: str) -> str | None:
        """The digest a tag names now, as the registry would resolve it (its current link,
        and that digest still a revision of the repository); None when unknown."""
        digest = self._read_link(self._repo(repository, "_manifests", "tags", tag, "current",
                                            "link"))
        if digest is None or not self.manifest_linked(repository, digest):
            return None
        return digest

    # -- blob bytes --------------------------------------------------------------------------
    def open_blob(self, digest: str) -> tuple[BinaryIO, int] | None:
        """(the blob's data file opened for reading, its size), or None."""
        if not SHA256_RE.match(digest):
            return None
        path = self.blob_path(digest)
        if not self._inside(path):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                return None
            return os.fdopen(fd, "rb", buffering=0), info.st_size  # type: ignore[return-value]
        except OSError:
            os.close(fd)
            return None
