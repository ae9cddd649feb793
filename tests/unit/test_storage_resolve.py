"""The registry storage's path checks, with openat2 and with the realpath fallback: a file is
read only when its path resolves inside the root with no symlink (or `..`) on the way, and is
a regular file. Real files under tmp_path; the kernel is not mocked."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from service.registry import storage as storage_mod
from service.registry.storage import RegistryStorage

DATA = b"blob bytes " * 300
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
MANIFEST = "sha256:" + "b" * 64
REPO = "team/app"

needs_openat2 = pytest.mark.skipif(storage_mod._kernel_openat2() is None,
                                   reason="openat2 is unavailable here (Linux < 5.6, seccomp)")


@pytest.fixture(params=[pytest.param(True, id="openat2", marks=needs_openat2),
                        pytest.param(False, id="realpath")])
def openat2(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _tree(base: Path) -> Path:
    """A storage root as distribution writes it: a tag, its revision, a layer and its blob."""
    v2 = base / "docker" / "registry" / "v2"
    links = {
        "_manifests/tags/v1/current/link": MANIFEST,
        f"_manifests/revisions/sha256/{MANIFEST[7:]}/link": MANIFEST,
        f"_layers/sha256/{DIGEST[7:]}/link": DIGEST,
    }
    for rel, digest in links.items():
        link = v2 / "repositories" / REPO / rel
        link.parent.mkdir(parents=True)
        link.write_text(digest)
    data = v2 / "blobs" / "sha256" / DIGEST[7:9] / DIGEST[7:] / "data"
    data.parent.mkdir(parents=True)
    data.write_bytes(DATA)
    return base


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return _tree(tmp_path / "root")


def _v2(root: Path) -> Path:
    return root / "docker" / "registry" / "v2"


def test_the_fallback_can_be_forced_and_openat2_is_used_where_it_works(root: Path) -> None:
    assert RegistryStorage(str(root), openat2=False)._openat2 is None
    assert RegistryStorage(str(root))._openat2 is storage_mod._kernel_openat2()


def test_a_plain_tree_resolves(root: Path, openat2: bool) -> None:
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.tag_digest(REPO, "v1") == MANIFEST
    assert storage.manifest_linked(REPO, MANIFEST)
    assert storage.blob_linked(REPO, DIGEST)
    opened = storage.open_blob(DIGEST)
    assert opened is not None
    with opened[0] as data:
        assert opened[1] == len(DATA) and data.read() == DATA
    assert storage.tag_digest(REPO, "v2") is None  # missing
    assert storage.tag_digest("team/other", "v1") is None
    assert storage.open_blob("sha256:" + "c" * 64) is None


def test_a_symlinked_directory_on_the_way_is_refused(root: Path, tmp_path: Path,
                                                     openat2: bool) -> None:
    """`repositories/team` a symlink to a directory elsewhere that holds the same tree."""
    elsewhere = _tree(tmp_path / "elsewhere")
    team = _v2(root) / "repositories" / "team"
    team.rename(tmp_path / "team-moved")
    team.symlink_to(_v2(elsewhere) / "repositories" / "team", target_is_directory=True)
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.tag_digest(REPO, "v1") is None
    assert not storage.manifest_linked(REPO, MANIFEST)
    assert not storage.blob_linked(REPO, DIGEST)
    # as is a symlink higher up, between the root and v2
    (root / "docker" / "registry").rename(tmp_path / "registry-moved")
    (root / "docker" / "registry").symlink_to(tmp_path / "registry-moved")
    assert storage.open_blob(DIGEST) is None


def test_a_symlinked_link_file_is_refused(root: Path, openat2: bool) -> None:
    current = _v2(root) / "repositories" / REPO / "_manifests" / "tags" / "v1" / "current"
    (current / "link").rename(current / "real-link")
    (current / "link").symlink_to(current / "real-link")  # even to a good link inside the root
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.tag_digest(REPO, "v1") is None


def test_a_symlinked_blob_is_refused(root: Path, openat2: bool) -> None:
    data = _v2(root) / "blobs" / "sha256" / DIGEST[7:9] / DIGEST[7:] / "data"
    data.unlink()
    data.symlink_to("/etc/passwd")
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.blob_linked(REPO, DIGEST)  # the link is fine, the data file is not
    assert storage.open_blob(DIGEST) is None


ODD_NAMES = ["team/../../../..", "team/../team/app", "team/./app", "../v2/repositories/team/app",
             "team/app/..",
             # cut short at the NUL, this would name the tag's link file, a good link
             "team/app/_manifests/tags/v1/current/link\0"]


@pytest.mark.parametrize("repository", ODD_NAMES)
def test_a_name_that_is_not_plain_never_resolves(root: Path, openat2: bool,
                                                 repository: str) -> None:
    """`..` cannot escape, nor even walk back inside; `.` components are refused (what
    realpath's comparison refuses), and a NUL does not cut the path short."""
    storage = RegistryStorage(str(root), openat2=openat2)
    if "\0" in repository and not openat2:
        with pytest.raises(ValueError):  # realpath's lstat refuses it, as it always has
            storage.tag_digest(repository, "v1")
        return
    assert storage.tag_digest(repository, "v1") is None
    assert not storage.manifest_linked(repository, MANIFEST)
    assert not storage.blob_linked(repository, DIGEST)


@needs_openat2
@pytest.mark.parametrize("repository", [*ODD_NAMES[:-1], "team//app", "/team/app", "team/app/",
                                        "team", "team/app/_manifests", "TEAM/app"])
def test_both_checks_answer_alike(root: Path, repository: str) -> None:
    """Empty components vanish in os.path.join (the same path then): both read it alike."""
    checks = [RegistryStorage(str(root), openat2=flag) for flag in (True, False)]
    answers = [(s.tag_digest(repository, "v1"), s.blob_linked(repository, DIGEST))
               for s in checks]
    assert answers[0] == answers[1]


def test_an_escape_finds_nothing_even_where_the_file_exists(root: Path, tmp_path: Path,
                                                            openat2: bool) -> None:
    """A link outside the root, where `..` components would lead: never read."""
    outside = _tree(tmp_path / "outside")
    repositories = _v2(root) / "repositories"
    escape = os.path.relpath(_v2(outside) / "repositories" / "team", repositories)
    assert (repositories / escape / "app" / "_manifests").is_dir()
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.tag_digest(escape + "/app", "v1") is None


def test_a_directory_where_a_file_should_be_is_refused(root: Path, openat2: bool) -> None:
    current = _v2(root) / "repositories" / REPO / "_manifests" / "tags" / "v1" / "current"
    (current / "link").unlink()
    (current / "link").mkdir()
    data = _v2(root) / "blobs" / "sha256" / DIGEST[7:9] / DIGEST[7:] / "data"
    data.unlink()
    data.mkdir()
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.tag_digest(REPO, "v1") is None
    assert storage.open_blob(DIGEST) is None


def test_a_root_created_after_start_is_read(tmp_path: Path, openat2: bool) -> None:
    """The registry creates its root with its first push, maybe after the gateway started."""
    assert RegistryStorage.open(str(tmp_path / "later")) is not None  # warned about only
    storage = RegistryStorage(str(tmp_path / "later"), openat2=openat2)
    assert storage.tag_digest(REPO, "v1") is None
    _tree(tmp_path / "later")
    assert storage.tag_digest(REPO, "v1") == MANIFEST


def test_a_root_replaced_while_running_is_followed(root: Path, tmp_path: Path,
                                                   openat2: bool) -> None:
    """Every open resolves the path again: a storage moved aside is not read any more."""
    storage = RegistryStorage(str(root), openat2=openat2)
    assert storage.tag_digest(REPO, "v1") == MANIFEST
    _v2(root).rename(tmp_path / "v2-old")
    assert storage.tag_digest(REPO, "v1") is None
    assert storage.open_blob(DIGEST) is None
