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

The path is checked as it is opened, by the kernel: `openat2(2)` with RESOLVE_NO_SYMLINKS
refuses a symlink on any component, in the one syscall that opens the file (a manifest GET by
tag reads two links per request; the `realpath` this replaces cost an lstat per component
and ~7% of the gateway's CPU). The path is absolute and made of names only (no `.`, `..` or
empty component), so with no symlink followed it resolves where it reads, inside the root. It
is resolved from `/` on every open, as realpath did, rather than beneath a descriptor of the
root held open: a root moved aside or replaced is never read through a stale handle. Where
openat2 is missing (Linux < 5.6, a seccomp filter that refuses it, another platform)
`realpath` is compared before an O_NOFOLLOW open, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import platform
import re
import stat
import sys
from typing import BinaryIO

log = logging.getLogger("tagwarden.storage")

SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
LINK_MAX = 128  # a link file holds one digest (`sha256:` + 64 hex, maybe a newline)
V2 = ("docker", "registry", "v2")
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
NOT_NAMES = frozenset({"", ".", ".."})  # path components that are not a file's name

# openat2(2), Linux >= 5.6: <linux/openat2.h>, <asm-generic/unistd.h> (437 on these machines;
# others are left to the realpath check rather than risk another syscall's number).
SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}
AT_FDCWD = -100
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04


class _OpenHow(ctypes.Structure):
    """struct open_how: what openat2 opens with, and how it may resolve the path."""

    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


class _Openat2:
    """openat2(2) through libc's syscall() (glibc has no wrapper), refusing every symlink."""

    def __init__(self, number: int) -> None:
        self._number = number
        self._how = _OpenHow(OPEN_FLAGS, 0, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
        self._syscall = ctypes.CDLL(None, use_errno=True).syscall
        self._syscall.restype = ctypes.c_long
        # syscall() reads every argument as a long: declared so, -100 reaches it sign-extended
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_char_p,
                                  ctypes.POINTER(_OpenHow), ctypes.c_size_t]

    def open(self, path: str) -> int:
        """The fd of absolute `path` opened read-only; OSError (ELOOP for a symlink on any
        component, ENOENT, ...) otherwise."""
        fd: int = self._syscall(self._number, AT_FDCWD, os.fsencode(path), self._how,
                                ctypes.sizeof(_OpenHow))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return fd


@functools.cache
def _kernel_openat2() -> _Openat2 | None:
    """openat2, if this process may call it (asked once): not before Linux 5.6 (ENOSYS), nor
    under a seccomp filter that refuses it (EPERM or ENOSYS, as older container runtimes'
    default profiles answer). None: paths are checked with realpath instead."""
    number = SYS_OPENAT2.get(platform.machine()) if sys.platform == "linux" else None
    if number is None:
        return None
    try:
        opener = _Openat2(number)
        os.close(opener.open("/"))
    except (OSError, AttributeError) as exc:  # AttributeError: a libc without syscall()
        log.info("openat2 is unavailable (%s): storage paths are checked with realpath", exc)
        return None
    return opener


class RegistryStorage:
    """The registry's filesystem storage, read only and never trusted beyond its root.
    `openat2=False` checks paths with realpath even where openat2 works (tests prove both)."""

    def __init__(self, root: str, *, openat2: bool = True) -> None:
        self.root = os.path.realpath(root)
        self.v2 = os.path.join(self.root, *V2)
        self._prefix = self.v2 + os.sep
        self._openat2 = _kernel_openat2() if openat2 else None

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

    def _plain(self, path: str) -> bool:
        """`path` is the v2 directory, a separator and names only: no empty component, no `.`
        or `..`, no NUL (which would end the C string early). Opened with no symlink followed,
        such a path resolves where it reads, inside the root (what `_inside` compares)."""
        return (path.startswith(self._prefix) and "\0" not in path
                and NOT_NAMES.isdisjoint(path[len(self._prefix):].split(os.sep)))

    def _repo(self, repository: str, *parts: str) -> str:
        return os.path.join(self.v2, "repositories", *repository.split("/"), *parts)

    def blob_path(self, digest: str) -> str:
        """Where distribution keeps a blob's bytes."""
        hex_ = digest[7:]
        return os.path.join(self.v2, "blobs", "sha256", hex_[:2], hex_, "data")

    # -- opening -----------------------------------------------------------------------------
    def _open_nofollow(self, path: str) -> int | None:
        """`path` opened read-only, or None unless it names itself inside the root with no
        symlink (or `..`) anywhere on the way. openat2 checks every component as it resolves
        them; realpath checks them before the open, whose O_NOFOLLOW covers the last one."""
        try:
            if self._openat2 is not None:
                return self._openat2.open(path) if self._plain(path) else None
            return os.open(path, OPEN_FLAGS) if self._inside(path) else None
        except OSError:
            return None

    def _open_regular(self, path: str) -> tuple[int, int] | None:
        """(fd, size) of the regular file at `path` (see `_open_nofollow`); None when it is not
        one (a directory where a link or a blob's data should be, say)."""
        fd = self._open_nofollow(path)
        if fd is None:
            return None
        with contextlib.suppress(OSError):
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode):
                return fd, info.st_size
        os.close(fd)
        return None

    # -- links -------------------------------------------------------------------------------
    def _read_link(self, path: str) -> str | None:
        opened = self._open_regular(path)
        if opened is None:
            return None
        try:
            value = os.read(opened[0], LINK_MAX + 1)
        except OSError:
            return None
        finally:
            os.close(opened[0])
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
        opened = self._open_regular(self.blob_path(digest))
        if opened is None:
            return None
        fd, size = opened
        try:
            return os.fdopen(fd, "rb", buffering=0), size
        except OSError:
            os.close(fd)
            return None
